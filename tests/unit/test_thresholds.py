"""Thresholds by scorer family: a threshold given for one family never routes another's scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from shared.core.messages import Result
from shared.core.settings import Settings
from shared.core.thresholds import DEFAULT_THRESHOLDS, Thresholds, scorer_family_of
from tests.results import result_for
from workers.routing.router import Router


def test_no_given_threshold_each_family_routes_on_its_default(caplog: pytest.LogCaptureFixture) -> None:
    thresholds = Thresholds(None, given_for="clip")
    assert thresholds.for_family("clip") == 15.0  # the original script's
    assert thresholds.for_family("") == 15.0  # a result that names no family: CLIP's
    assert thresholds.for_family("siglip") == DEFAULT_THRESHOLDS["siglip"]
    assert not caplog.records  # nothing was given, so nothing is reused


def test_a_threshold_for_clip_is_not_reused_for_siglip_and_the_warning_comes_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    thresholds = Thresholds(20.0, given_for="clip")
    with caplog.at_level(logging.WARNING, logger="shared.core.thresholds"):
        assert thresholds.for_family("clip") == 20.0
        assert [thresholds.for_family("siglip") for _ in range(3)] == [DEFAULT_THRESHOLDS["siglip"]] * 3
        assert thresholds.for_family("siglip2") == DEFAULT_THRESHOLDS["siglip2"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # once per other family
    assert "--threshold 20 was given for clip scores; siglip scores route against" in warnings[0]


def test_at_start_a_threshold_for_another_family_than_the_scorer_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "my-scorer"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    assert scorer_family_of(str(folder)) == "siglip2"
    assert scorer_family_of("google/siglip-so400m-patch14-384") == "siglip"
    assert scorer_family_of("openai/clip-vit-large-patch14") == "clip"
    with caplog.at_level(logging.WARNING, logger="shared.core.thresholds"):
        Thresholds(0.2, given_for="siglip2").check_start(str(folder))
        assert not caplog.records
        Thresholds(15.0, given_for="clip").check_start(str(folder))
    assert len(caplog.records) == 1 and "siglip2 scores route against" in caplog.records[0].getMessage()


def _settings(tmp_path: Path, **values: object) -> Settings:
    (tmp_path / "in").mkdir(exist_ok=True)
    return Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        clip_failed_dir=tmp_path / "failed",
        errors_dir=tmp_path / "errors",
        **values,  # type: ignore[arg-type]
    )


def _scored(settings: Settings, name: str, *, score: float, family: str) -> Result:
    assert settings.input_dir is not None
    data = name.encode()
    (settings.input_dir / name).write_bytes(data)
    return result_for(name, data, ok=True, caption="a caption", score=score, score_family=family)


def test_a_router_routes_each_score_against_its_own_familys_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A threshold for CLIP (the default --clip-model's family), and workers of one queue that
    # score with CLIP and with SigLIP: 0.5 is a good SigLIP score and a hopeless CLIP one.
    settings = _settings(tmp_path, threshold=20.0)
    router = Router(settings)
    with caplog.at_level(logging.WARNING, logger="shared.core.thresholds"):
        assert router.route(_scored(settings, "a.png", score=0.5, family="siglip")).outcome == "output"
        assert router.route(_scored(settings, "b.png", score=19.0, family="clip")).outcome == "clip_failed"
        assert router.route(_scored(settings, "c.png", score=0.05, family="siglip")).outcome == "clip_failed"
    records = {p.stem: json.loads(p.read_text()) for p in tmp_path.rglob("*.json")}
    assert records["a"]["threshold"] == DEFAULT_THRESHOLDS["siglip"] == records["c"]["threshold"]
    assert records["b"]["threshold"] == 20.0
    assert records["a"]["clip_score_family"] == "siglip"
    assert len(caplog.records) == 1  # once, not per image


def test_a_threshold_given_with_a_siglip_scorer_is_for_siglip(tmp_path: Path) -> None:
    folder = tmp_path / "siglip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    settings = _settings(tmp_path, threshold=0.3, clip_model=str(folder))
    router = Router(settings)
    assert router.route(_scored(settings, "a.png", score=0.25, family="siglip")).outcome == "clip_failed"
    assert (
        router.route(_scored(settings, "b.png", score=16.0, family="clip")).outcome == "output"
    )  # CLIP's 15
