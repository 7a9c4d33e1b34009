"""A worker that cannot start stops `kcap run` with its own message instead of being
restarted forever: real `kcap run`, embedded Redis, real supervisors and worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from shared.cli.exits import Exit
from shared.core.settings import Settings
from tests.conftest import Processes
from tests.integration.helpers import drop_images


def test_kcap_run_with_a_missing_model_stops_with_the_reason_and_loses_nothing(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    settings = make_settings(caption_model=str(missing))
    assert settings.input_dir is not None and settings.output_dir is not None
    inbox = settings.input_dir
    before = {name: (inbox / name).read_bytes() for name in drop_images(settings, 3, seed=4)}

    started = time.monotonic()
    run = procs.kcap("run", settings=settings)
    run.wait(timeout=120)
    logs = procs.logs()
    assert run.returncode == Exit.ERROR, logs[-4000:]
    # The worker's own reason, once, then the run's: not a restart loop.
    assert f"caption model not found at {missing}" in logs
    assert logs.count(f"caption model not found at {missing}") == 1, logs[-4000:]
    assert "kcap: error: the caption workers stopped with an error" in logs
    assert "restarting" not in logs
    assert time.monotonic() - started < 110
    # The inputs are untouched and nothing was filed.
    assert {name: (inbox / name).read_bytes() for name in before} == before
    assert not list(settings.output_dir.rglob("*.json"))
