"""`kcap demo`: a new user's first minute, with no model hub and no broker configured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_demo_builds_its_models_and_images_and_routes_every_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCAP_")}
    demo = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "demo", str(demo), "--images", "8"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    inputs = sorted(p.relative_to(demo / "inbox").as_posix() for p in (demo / "inbox").rglob("*.*"))
    assert len(inputs) == 9 and "trip/demo-03.jpg" in inputs  # 8 images and one broken file
    landed = {
        name: sorted(
            p.relative_to(demo / name).as_posix()
            for p in (demo / name).rglob("*")
            if p.suffix in (".png", ".jpg")
        )
        for name in ("captioned", "clip_failed", "errors")
    }
    assert sorted(landed["captioned"] + landed["clip_failed"] + landed["errors"]) == inputs
    assert landed["errors"] == ["broken.jpg"]
    # The demo's threshold splits the tiny models' scores: both folders get images.
    assert landed["captioned"] and landed["clip_failed"], landed
    reason = json.loads((demo / "errors" / "broken.jpg.error.json").read_text())["reason"]
    assert "truncated" in reason or "cannot" in reason or "not an image" in reason, reason
    # The run's summary counts what landed in each folder, and says where.
    for label, name in (("output", "captioned"), ("clip-failed", "clip_failed"), ("errors", "errors")):
        assert re.search(rf"^  {label} +{len(landed[name])}  {demo / name}$", done.stdout, re.M), done.stdout
    assert "1 BadImageError: " in done.stdout
    assert "kcap report" in done.stdout and "kcap up --input-dir" in done.stdout
