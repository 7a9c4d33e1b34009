"""deploy/ against the real schemas and tools: the compose file against the compose
specification (check-jsonschema's vendored copy), the Kubernetes manifests against the
Kubernetes 1.31 API (kubernetes-validate, strict: an unknown field fails), KEDA's resources
against KEDA's own CRD models (cloudcoil's models generated from them), and the systemd units
with systemd-analyze where this machine has it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.31.0"
UNIT_FILES = sorted(p for p in (DEPLOY / "systemd").iterdir() if p.suffix in (".service", ".target"))


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "metadata" in doc:  # kustomization.yaml is a kustomize file, not a resource
                docs.append((f"{path.name} {doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def test_the_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_compose_file_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is refused."""
    broken = tmp_path / "compose.yml"
    broken.write_text(
        (DEPLOY / "docker-compose.yml").read_text().replace("stop_grace_period:", "stop_grace:")
    )
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "stop_grace" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "where,doc",
    [d for d in _k8s_docs() if not d[1]["apiVersion"].startswith("keda.sh/")],
    ids=lambda v: str(v)[:60],
)
def test_each_kubernetes_manifest_validates_against_the_api(where: str, doc: dict[str, Any]) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc}")


def test_an_unknown_kubernetes_field_is_caught() -> None:
    import kubernetes_validate

    deployment = next(doc for _, doc in _k8s_docs() if doc["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _keda_model(kind: str) -> Any:
    from cloudcoil.models.keda import v1alpha1

    return getattr(v1alpha1, kind)


def _unknown_keys(given: Any, known: Any, path: str = "") -> list[str]:
    """Keys of the manifest that the model dropped: fields KEDA does not know."""
    if isinstance(given, dict) and isinstance(known, dict):
        found = [f"{path}.{key}" for key in given if key not in known]
        for key, value in given.items():
            if key in known:
                found += _unknown_keys(value, known[key], f"{path}.{key}")
        return found
    if isinstance(given, list) and isinstance(known, list):
        return [
            miss
            for i, (g, k) in enumerate(zip(given, known, strict=False))
            for miss in _unknown_keys(g, k, f"{path}[{i}]")
        ]
    return []


def _validate_keda(doc: dict[str, Any]) -> list[str]:
    model = _keda_model(doc["kind"]).model_validate(doc)
    return _unknown_keys(doc, model.model_dump(by_alias=True, exclude_unset=True, mode="json"))


@pytest.mark.parametrize(
    "where,doc",
    [d for d in _k8s_docs() if d[1]["apiVersion"].startswith("keda.sh/")],
    ids=lambda v: str(v)[:60],
)
def test_keda_resources_validate_against_kedas_crd_models(where: str, doc: dict[str, Any]) -> None:
    assert _validate_keda(doc) == [], where


def test_a_broken_keda_resource_is_caught() -> None:
    from pydantic import ValidationError

    scaled = next(doc for _, doc in _k8s_docs() if doc["kind"] == "ScaledObject")
    misspelt = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 8}}
    assert _validate_keda(misspelt) == [".spec.maxReplicas"]
    with pytest.raises(ValidationError):
        _validate_keda({**scaled, "spec": {**scaled["spec"], "pollingInterval": "often"}})


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # verify insists that ExecStart's program exists: point it at a stub kcap.
    stub = tmp_path / "bin" / "kcap"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNIT_FILES:
        text = re.sub(r"(?m)^(Exec\w+=[-@+!:]*)\S*/kcap\b", rf"\g<1>{stub}", unit.read_text())
        (units / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in units.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
