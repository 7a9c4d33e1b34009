"""Thresholds by scorer family: a threshold given for one family never routes another's scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from shared.core.thresholds import DEFAULT_THRESHOLDS, Thresholds, scorer_family_of


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
