"""`kcap run` with a tiny model of each caption family and each scorer family: real embedded
Redis, real worker and router processes, then metadata.jsonl, export and report on what it
wrote. Kosmos-2 + CLIP is the pipeline tests' own pair (tests/integration/test_pipeline.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.cli.exits import Exit
from shared.core.settings import Settings
from shared.core.thresholds import DEFAULT_THRESHOLDS
from shared.report.dataset import resolve_roots
from shared.report.export import write_export
from shared.report.gallery import write_report
from tests.conftest import Processes
from tests.integration.helpers import drop_images, records
from workers.tiny.families import CAPTIONERS, SCORERS

# Every caption family with a scorer family, so each of both kinds runs once at least.
PAIRS = [
    ("florence-2", "siglip"),
    # The others are slow (about 7 s each); `make test` keeps one run of a new family.
    pytest.param("llava", "siglip2", marks=pytest.mark.slow),
    pytest.param("idefics3", "clip", marks=pytest.mark.slow),
    pytest.param("blip-2", "siglip2", marks=pytest.mark.slow),
    pytest.param("kosmos-2", "siglip", marks=pytest.mark.slow),
    # The processors that also take video, loaded without it (no torchvision here).
    pytest.param("qwen2-vl", "clip", marks=pytest.mark.slow),
    pytest.param("qwen2.5-vl", "siglip", marks=pytest.mark.slow),
    pytest.param("qwen3-vl", "siglip2", marks=pytest.mark.slow),
    pytest.param("smolvlm", "siglip2", marks=pytest.mark.slow),
    pytest.param("llava-onevision", "clip", marks=pytest.mark.slow),
]
# What each caption family's "detailed" preset is sent as.
DETAILED = {
    "florence-2": "<MORE_DETAILED_CAPTION>",
    "llava": "Give a detailed description of this image",
    "idefics3": "Give a detailed description of this image",
    "kosmos-2": "Give a detailed description of this image",
    "blip-2": "Question: Describe this image in detail.",
    **dict.fromkeys(
        ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "smolvlm", "llava-onevision"),
        "Give a detailed description of this image",
    ),
}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-models")
    wanted = {name for pair in PAIRS for name in (pair.values if hasattr(pair, "values") else pair)}
    return {name: build(root / name) for name, build in {**CAPTIONERS, **SCORERS}.items() if name in wanted}


@pytest.mark.parametrize(("caption_family", "scorer_family"), PAIRS)
def test_kcap_run_routes_images_with_each_family_and_the_outputs_read_back(
    caption_family: str,
    scorer_family: str,
    family_models: dict[str, Path],
    make_settings: Callable[..., Settings],
    procs: Processes,
    tmp_path: Path,
) -> None:
    # No threshold given: each family's default routes. Random tiny scorers score unrelated
    # pairs low, so CLIP's 15 sends images to clip-failed; SigLIP's scores sit near its
    # default too: where an image lands is not the point, that it lands once, is.
    settings = make_settings(
        caption_model=str(family_models[caption_family]),
        clip_model=str(family_models[scorer_family]),
        threshold=None,
    )
    assert settings.output_dir is not None and settings.clip_failed_dir is not None
    names = drop_images(settings, 4, seed=21)

    run = procs.kcap("run", settings=settings)
    run.wait(timeout=240)
    assert run.returncode == 0, procs.logs()[-4000:]

    found = records(settings)
    routed = found["output"] + found["clip_failed"]
    assert sorted(str(r["source"]) for r in routed) == names and not found["errors"]
    threshold = DEFAULT_THRESHOLDS[scorer_family]
    for record in routed:
        assert record["caption"] and isinstance(record["caption"], str)
        assert record["caption_family"] == caption_family
        assert record["clip_score_family"] == scorer_family
        assert record["clip_score_method"] == ("original" if scorer_family == "clip" else "sigmoid")
        assert record["threshold"] == threshold
        score = record["clip_score"]
        assert isinstance(score, float)
        assert (score >= threshold) == (record["outcome"] == "output")
        if scorer_family != "clip":
            assert 0.0 <= score <= 1.0
        assert str(record["prompt"]).startswith(DETAILED[caption_family])
        caption_file = Path(str(record["_path"])).with_suffix(".txt")
        assert caption_file.read_text() == record["caption"]
    assert len({r["caption"] for r in routed}) > 1  # the captions depend on the images

    # metadata.jsonl beside the images, one line per image of that folder.
    lines = []
    for root in (settings.output_dir, settings.clip_failed_dir):
        log = root / "metadata.jsonl"
        if log.exists():
            lines += [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(line["file_name"] for line in lines) == names

    roots = resolve_roots(settings.output_dir, settings.clip_failed_dir, settings.errors_dir)
    summary = write_export(roots, tmp_path / "export" / "rows.jsonl", fmt="jsonl")
    rows = [json.loads(line) for line in (tmp_path / "export" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and summary["clip_score"]["threshold"] == threshold
    report = write_report(roots, tmp_path / "report.html")
    assert report["clip_score"]["count"] == 4
    page = (tmp_path / "report.html").read_text()
    assert all(str(r["caption"]) in page for r in routed)


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_kcap_run_with_an_unsupported_caption_model_stops_at_start_naming_the_families(
    family_models: dict[str, Path], make_settings: Callable[..., Settings], procs: Processes
) -> None:
    # A SigLIP checkpoint is a scorer, not a captioner: the worker refuses it before any job.
    settings = make_settings(caption_model=str(family_models["siglip"]))
    assert settings.output_dir is not None
    drop_images(settings, 2, seed=5)
    run = procs.kcap("run", settings=settings)
    run.wait(timeout=120)
    logs = procs.logs()
    assert run.returncode == Exit.ERROR, logs[-4000:]
    assert "is a 'siglip', which kcap cannot caption with; the supported families" in logs
    assert "kosmos-2 (kosmos-2), florence-2 (florence2)" in logs
    assert not list(settings.output_dir.rglob("*.json"))  # nothing was taken and lost
