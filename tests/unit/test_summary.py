"""The summary at the end of a run: this run's errors by kind, and the one-sided threshold hint."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from shared.cli.summary import RunSummary, error_kinds, summary_lines, threshold_hint
from shared.core.outcomes import Outcome
from shared.core.settings import Settings


def _error(folder: Path, name: str, kind: str, reason: str, *, age_s: float = 0.0) -> None:
    path = folder / f"{name}.error.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"error_class": kind, "reason": reason}))
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))


def test_this_runs_errors_are_counted_by_kind_with_a_reason(tmp_path: Path) -> None:
    errors = tmp_path / "errors"
    _error(errors, "old.jpg", "BadImageError", "from yesterday", age_s=86400)
    _error(errors, "a.jpg", "BadImageError", "corrupt or truncated image")
    _error(errors, "sub/b.jpg", "BadImageError", "corrupt or truncated image")
    _error(errors, "c.png", "Refused", "larger than --max-file-bytes")
    kinds = error_kinds(errors, since=time.time() - 3600)
    assert list(kinds) == ["BadImageError", "Refused"]  # most frequent first
    bad = kinds["BadImageError"]
    assert bad.count == 2 and bad.example == "corrupt or truncated image"
    assert kinds["Refused"].count == 1
    settings = Settings(output_dir=tmp_path / "out", clip_failed_dir=tmp_path / "cf", errors_dir=errors)
    counts = {Outcome.OUTPUT: 5, Outcome.CLIP_FAILED: 2, Outcome.ERRORS: 4}
    lines = summary_lines(
        settings, RunSummary(counts, kinds), command="kcap run", logs=tmp_path / "logs", stats={"done": 3}
    )
    assert lines[0] == "kcap run: 11 images filed (3 already done before, skipped)"
    assert "    2 BadImageError: corrupt or truncated image" in lines
    assert "    1 more not read here (the .error.json files say why)" in lines
    assert not any("hint" in line for line in lines)  # both sides of the threshold got images


def test_a_hint_when_every_image_fell_on_one_side_of_the_threshold(tmp_path: Path) -> None:
    scoring = Settings(output_dir=tmp_path / "out", clip_failed_dir=tmp_path / "cf")
    below = threshold_hint(scoring, {Outcome.OUTPUT: 0, Outcome.CLIP_FAILED: 30, Outcome.ERRORS: 1})
    assert str(below).startswith("every scored image (30) scored below the threshold 15 (clip)")
    above = threshold_hint(scoring.replace(threshold=-5.0), {Outcome.OUTPUT: 3, Outcome.CLIP_FAILED: 0})
    assert above is not None and "at or above the threshold -5 (clip)" in above
    siglip = scoring.replace(clip_model="google/siglip-base-patch16-224")
    assert "threshold 0.1 (siglip)" in str(threshold_hint(siglip, {Outcome.CLIP_FAILED: 4}))
    assert threshold_hint(scoring, {Outcome.OUTPUT: 3, Outcome.CLIP_FAILED: 1}) is None
    assert threshold_hint(scoring, {Outcome.ERRORS: 3}) is None
    no_scoring = Settings(output_dir=tmp_path / "out")
    assert threshold_hint(no_scoring, {Outcome.OUTPUT: 3}) is None
