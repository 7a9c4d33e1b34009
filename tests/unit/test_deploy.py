"""deploy/ stays true to the code: every file parses, and every `kcap` command, flag and
KCAP_* variable that a deploy file uses exists in the real CLI and Settings."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.cli.exits import Exit
from shared.cli.main import build_parser
from shared.core.settings import Settings

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
UNIT_FILES = sorted(p for p in (DEPLOY / "systemd").iterdir() if p.suffix in (".service", ".target"))
MARKDOWN_FILES = sorted(DEPLOY.rglob("*.md"))
K8S_FILES = sorted((DEPLOY / "k8s").rglob("*.yaml"))
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}
# How long `kcap worker` gives a Celery child to finish its batch before SIGKILL.
SUPERVISOR_STOP_S = Settings().stop_timeout_s


# -- collecting the kcap command lines that deploy files run ------------------------------


def _rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY.parent))


def _is_kcap(token: str) -> bool:
    return token.rsplit("/", 1)[-1] == "kcap"


def _is_kcap_image(image: str) -> bool:
    """kcap:latest, kcap-storage:latest, registry.example.com/kcap:1.2 -> True; redis:7.4 -> False."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return name in ("kcap", "kcap-storage")


def _from_shell(script: str) -> Iterator[list[str]]:
    """kcap invocations inside a shell script or a code block, one argv each."""
    script = script.replace("\\\n", " ")
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                yield from _kcap_in(command)
                command = []
            else:
                command.append(token)


_WRAPPERS = {"sudo", "exec", "env", "nohup", "time"}


def _kcap_in(tokens: list[str]) -> Iterator[list[str]]:
    """kcap where a shell runs it: in command position (after VAR=value and sudo/exec),
    after `--` (kubectl exec ... -- kcap), or as the command of `docker ... exec|run`."""
    index = 0
    while index < len(tokens) and (tokens[index] in _WRAPPERS or re.match(r"\w+=", tokens[index])):
        index += 1
    start = None
    if index < len(tokens) and _is_kcap(tokens[index]):
        start = index
    elif "--" in tokens and tokens.index("--") + 1 < len(tokens) and _is_kcap(tokens[tokens.index("--") + 1]):
        start = tokens.index("--") + 1
    elif tokens[index : index + 1] == ["docker"]:
        verbs = [i for i, token in enumerate(tokens) if token in ("exec", "run")]
        after = tokens[verbs[0] :] if verbs else []
        start = next((verbs[0] + i for i, token in enumerate(after) if token == "kcap"), None)
    if start is not None:
        yield ["kcap", *tokens[start + 1 :]]


def _from_argv(argv: list[str]) -> Iterator[list[str]]:
    """An exec-form command: kcap itself, or a shell running a script that may call kcap."""
    if not argv:
        return
    if _is_kcap(argv[0]):
        yield ["kcap", *argv[1:]]
    elif argv[0] in SHELLS and "-c" in argv:
        script_at = argv.index("-c") + 1
        if script_at < len(argv):
            yield from _from_shell(argv[script_at])


def _as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def dockerfile_invocations() -> list[tuple[str, list[str]]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    exec_form: dict[str, list[str]] = {}
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() in ("ENTRYPOINT", "CMD"):
            exec_form[keyword.upper()] = json.loads(rest)  # exec form only: signals reach kcap
    argv = [*exec_form.get("ENTRYPOINT", []), *exec_form.get("CMD", [])]
    return [("deploy/Dockerfile ENTRYPOINT+CMD", found) for found in _from_argv(argv)]


def compose_invocations() -> list[tuple[str, list[str]]]:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    found: list[tuple[str, list[str]]] = []
    for name, service in compose["services"].items():
        where = f"docker-compose.yml service {name}"
        command = _as_argv(service.get("command"))
        entrypoint = _as_argv(service.get("entrypoint"))
        if _is_kcap_image(service.get("image", "")) and not entrypoint:
            entrypoint = ["kcap"]  # the image's ENTRYPOINT
        found += [(where, argv) for argv in _from_argv([*entrypoint, *command])]
        test = _as_argv(service.get("healthcheck", {}).get("test"))
        if test[:1] == ["CMD-SHELL"]:
            found += [(f"{where} healthcheck", argv) for argv in _from_shell(" ".join(test[1:]))]
        elif test[:1] == ["CMD"]:
            found += [(f"{where} healthcheck", argv) for argv in _from_argv(test[1:])]
    return found


def systemd_invocations() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for unit in UNIT_FILES:
        for line in unit.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().startswith("Exec"):
                argv = shlex.split(value.strip().lstrip("-@+!:"))
                found += [(f"{unit.name} {key.strip()}", found_argv) for found_argv in _from_argv(argv)]
    return found


def _containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    if doc.get("kind") == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "metadata" in doc:  # a kustomization.yaml has none
                yield path, doc


def k8s_invocations() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path, doc in k8s_docs():
        for container in _containers(doc):
            where = f"{path.name} {doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            command = _as_argv(container.get("command"))
            if not command and _is_kcap_image(container.get("image", "")):
                command = ["kcap"]  # the image's ENTRYPOINT
            found += [(where, argv) for argv in _from_argv([*command, *_as_argv(container.get("args"))])]
            hooks = [container.get("lifecycle", {}).get(h, {}) for h in ("preStop", "postStart")]
            probes = [container.get(p, {}) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
            for handler in hooks + probes:
                exec_command = _as_argv(handler.get("exec", {}).get("command"))
                found += [(f"{where} hook/probe", argv) for argv in _from_argv(exec_command)]
    return found


def markdown_invocations() -> list[tuple[str, list[str]]]:
    """kcap lines inside fenced shell code blocks of the deploy docs."""
    found: list[tuple[str, list[str]]] = []
    for path in MARKDOWN_FILES:
        text = path.read_text()
        for match in re.finditer(r"```(sh|bash|console|shell)\n(.*?)```", text, flags=re.S):
            found += [(_rel(path), argv) for argv in _from_shell(match.group(2))]
    return found


ALL_INVOCATIONS = {
    "dockerfile": dockerfile_invocations,
    "compose": compose_invocations,
    "systemd": systemd_invocations,
    "k8s": k8s_invocations,
    "markdown": markdown_invocations,
}


# -- checking an argv against the real parser -------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> bool:
    action = parser._option_string_actions[flag]
    return action.nargs != 0


def _unknown_flags(parser: argparse.ArgumentParser, tokens: list[str]) -> tuple[list[str], list[str]]:
    """(unknown flags, the remaining tokens once the parser's own options are consumed)."""
    unknown: list[str] = []
    index = 0
    while index < len(tokens) and tokens[index].startswith("-"):
        flag, has_value, _ = tokens[index].partition("=")
        if flag not in parser._option_string_actions:
            unknown.append(flag)
            index += 1
            continue
        index += 2 if _takes_value(parser, flag) and not has_value else 1
    return unknown, tokens[index:]


def check_invocation(argv: list[str]) -> list[str]:
    """Problems with one `kcap ...` command line; [] when the real CLI accepts it."""
    assert argv[0] == "kcap"
    root = build_parser()
    problems: list[str] = []
    unknown, rest = _unknown_flags(root, argv[1:])
    problems += [f"kcap has no option {flag}" for flag in unknown]
    if "-h" in argv or "--help" in argv:
        return problems
    if not rest:
        return [*problems, "no subcommand"]
    commands = _subparsers(root)
    if rest[0] not in commands:
        return [*problems, f"no subcommand {rest[0]!r} (have: {', '.join(commands)})"]
    sub = commands[rest[0]]
    for token in rest[1:]:
        flag = token.partition("=")[0]
        if token.startswith("-") and flag not in sub._option_string_actions:
            problems.append(f"`kcap {rest[0]}` has no option {flag}")
    if not problems:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                root.parse_args(argv[1:])
            except SystemExit:
                problems.append(f"argparse refuses it: {stderr.getvalue().strip()}")
    return problems


# -- tests --------------------------------------------------------------------------------


def test_deploy_folder_has_every_part() -> None:
    for part in ("Dockerfile", "docker-compose.yml", "kcap.env.example", "README.md", "flower/README.md"):
        assert (DEPLOY / part).is_file(), part
    assert {p.name for p in UNIT_FILES} >= {
        "kcap-worker@.service",
        "kcap-watch.service",
        "kcap-router.service",
        "kcap-flower.service",
    }
    assert K8S_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{_rel(path)} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{_rel(path)}: a document is not a mapping"


@pytest.mark.parametrize("source", sorted(ALL_INVOCATIONS))
def test_every_kcap_command_exists_in_the_cli(source: str) -> None:
    found = ALL_INVOCATIONS[source]()
    assert found, f"no kcap command found in the {source} files: is the extraction broken?"
    problems = [
        f"{where}: `{shlex.join(argv)}`: {problem}"
        for where, argv in found
        for problem in check_invocation(argv)
    ]
    assert not problems, "\n".join(problems)


def test_the_extraction_sees_each_role() -> None:
    """The parsers above must find what the files obviously run, or the check is hollow."""

    def subcommands(source: str) -> set[str]:
        return {argv[1] for _, argv in ALL_INVOCATIONS[source]() if len(argv) > 1}

    roles = {"watch", "router", "worker", "flower"}
    assert subcommands("compose") >= roles
    assert subcommands("systemd") >= roles
    assert subcommands("k8s") >= roles
    assert dockerfile_invocations() == [("deploy/Dockerfile ENTRYPOINT+CMD", ["kcap", "--help"])]


def test_check_invocation_catches_mistakes() -> None:
    assert check_invocation(["kcap", "worker", "--gpus", "0"]) == []
    assert check_invocation(["kcap", "wrker"])
    assert check_invocation(["kcap", "worker", "--gpu", "0"])
    assert check_invocation(["kcap", "router", "--concurrency", "many"])
    assert check_invocation(["kcap"])


def test_every_kcap_variable_is_a_setting() -> None:
    fields = {f"KCAP_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    used: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in re.findall(r"\bKCAP_[A-Z][A-Z0-9_]*", path.read_text()):
                used.setdefault(name, set()).add(_rel(path))
    assert used, "no KCAP_* variable found under deploy/"
    unknown = {name: sorted(paths) for name, paths in used.items() if name not in fields}
    assert not unknown, f"not Settings fields: {unknown}"


# -- what each deployment must guarantee ------------------------------------------------


def _seconds(value: str | int) -> float:
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?", text)
    assert match, f"cannot read a duration from {value!r}"
    return float(match.group(1)) * units[match.group(2) or "s"]


def test_dockerfile_is_non_root_offline_and_has_no_models() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert re.search(r"\bHF_HOME=/models\b", text)
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", text)
    assert "hf download" not in text and "snapshot_download" not in text, "models are mounted"


def test_compose_gpu_workers_redis_and_flower() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    workers = {n: s for n, s in services.items() if _as_argv(s.get("command"))[:1] == ["worker"]}
    assert len(workers) >= 2
    device_ids = []
    for name, service in workers.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert len(device["device_ids"]) == 1, name
        device_ids += device["device_ids"]
        # One GPU per container, which the container numbers 0.
        assert _as_argv(service["command"]) == ["worker", "--gpus", "0"], name
        assert _seconds(service["stop_grace_period"]) > SUPERVISOR_STOP_S, name
        assert "KCAP_BROKER_URL" in service["environment"], name
    assert len(set(device_ids)) == len(device_ids), "two workers on one GPU"

    redis_command = " ".join(_as_argv(services["redis"]["command"]))
    assert "--appendonly yes" in redis_command
    assert re.search(r"requirepass \$", redis_command), "requirepass must come from a variable"
    for name, service in services.items():
        url = (service.get("environment") or {}).get("KCAP_BROKER_URL")
        if url is not None:
            assert url.startswith("redis://:${REDIS_PASSWORD"), f"{name}: password not from the env"

    flower = services["flower"]
    assert _as_argv(flower["command"])[:3] == ["flower", "--flower-address", "0.0.0.0"]
    assert flower["environment"]["KCAP_FLOWER_BASIC_AUTH"].startswith("${")


def _unit(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            values[key.strip()] = value.strip()
    return values


@pytest.mark.parametrize("path", [p for p in UNIT_FILES if p.suffix == ".service"], ids=lambda p: p.name)
def test_systemd_units_restart_and_stop_warmly(path: Path) -> None:
    unit = _unit(path)
    assert unit["Restart"] == "on-failure"
    assert unit["RestartPreventExitStatus"] == str(int(Exit.ERROR))  # said why: do not loop
    assert _seconds(unit["RestartSec"]) > 0
    assert unit["EnvironmentFile"] == "/etc/kcap/kcap.env"
    assert unit["KillSignal"] == "SIGTERM"
    assert _seconds(unit["TimeoutStopSec"]) > 0
    if path.name == "kcap-worker@.service":
        assert shlex.split(unit["ExecStart"])[1:] == ["worker", "--gpus", "%i"]
        assert _seconds(unit["TimeoutStopSec"]) > SUPERVISOR_STOP_S


def test_k8s_workers_redis_and_keda() -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in k8s_docs()}
    worker = docs[("Deployment", "kcap-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > SUPERVISOR_STOP_S
    (container,) = worker["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["lifecycle"]["preStop"]["exec"]["command"]

    redis = docs[("StatefulSet", "redis")]["spec"]
    assert redis["volumeClaimTemplates"]
    (redis_container,) = redis["template"]["spec"]["containers"]
    redis_command = " ".join(_as_argv(redis_container["command"]))
    assert "--appendonly yes" in redis_command
    assert re.search(r"requirepass \$", redis_command)
    assert any(e.get("valueFrom", {}).get("secretKeyRef") for e in redis_container["env"])
    assert ("Service", "redis") in docs

    assert ("Deployment", "kcap-flower") in docs and ("Service", "kcap-flower") in docs
    (trigger,) = docs[("ScaledObject", "kcap-worker")]["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == Settings().caption_queue


def test_no_secret_is_hard_coded() -> None:
    """Only the *.example files may hold (placeholder) passwords."""
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or path.name.endswith(".example"):
            continue
        text = path.read_text()
        assert not re.search(r"redis://:[A-Za-z0-9]", text), f"{_rel(path)}: literal Redis password"
        for match in re.finditer(r"(?<![{\w])(\w*(?:BASIC_AUTH|PASSWORD))\s*[:=]\s*(\S+)", text):
            value = match.group(2).strip("\"'")
            if value and not value.startswith(("$", "${", "user:", "{")):
                pytest.fail(f"{_rel(path)}: {match.group(0)!r} looks like a hard-coded secret")


STORAGE_ROLES = {"watch", "router", "flower"}


def _dockerfile_stages() -> dict[str, list[str]]:
    """The lines of each named build stage of deploy/Dockerfile."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\w+))?", line)
        if match:
            current = stages.setdefault(match.group(1) or f"stage{len(stages)}", [])
        current.append(line)
    return stages


def test_storage_roles_run_the_slim_image_and_workers_the_gpu_one() -> None:
    stages = _dockerfile_stages()
    assert {"storage", "gpu"} <= set(stages)
    storage_code = [line for line in stages["storage"] if not line.lstrip().startswith("#")]
    assert not [line for line in storage_code if "torch" in line or "[models]" in line], storage_code
    assert any('uv pip install "/tmp/kcap-src[models,s3]"' in line for line in stages["gpu"])
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        role = _as_argv(service.get("command"))[:1]
        if role and role[0] in STORAGE_ROLES:
            assert service["image"].startswith("kcap-storage:"), name
            assert service["build"]["target"] == "storage", name
        elif role == ["worker"]:
            assert service["image"].startswith("kcap:") and service["build"]["target"] == "gpu", name
    for _, doc in k8s_docs():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            role = _as_argv(container.get("args") or container.get("command"))
            image = container["image"]
            if any(r in STORAGE_ROLES for r in role[:2]):
                assert image.startswith("kcap-storage:"), (doc["metadata"]["name"], image)
            elif "worker" in role[:2]:
                assert image.startswith("kcap:"), (doc["metadata"]["name"], image)
