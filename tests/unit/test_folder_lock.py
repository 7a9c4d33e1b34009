"""shared.core.folder_lock on real processes: the holder's own children go on, any other kcap
is refused with the holder's PID, and a released or dead holder blocks nobody."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.core.folder_lock import HOLDER_ENV, LOCK_NAME, hold_folders
from shared.core.settings import Settings
from tests.conftest import REPO

# A second process that takes the same folders' locks, as `kcap router` would.
TAKE = (
    "import sys; from pathlib import Path; from shared.core.settings import Settings; "
    "from shared.core.folder_lock import hold_folders; "
    "hold_folders(Settings(output_dir=Path(sys.argv[1]), state_dir=Path(sys.argv[2])), "
    "command='kcap router', state=False); print('taken')"
)


def _take(settings: Settings, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert settings.output_dir is not None
    return subprocess.run(
        [sys.executable, "-c", TAKE, str(settings.output_dir), str(settings.state_dir)],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(input_dir=tmp_path / "in", output_dir=tmp_path / "out", state_dir=tmp_path / "state")


def test_the_holders_children_go_on_and_a_stranger_is_refused_until_it_lets_go(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HOLDER_ENV, raising=False)
    assert settings.output_dir is not None and settings.errors_dir is not None
    locks = hold_folders(settings, command="kcap up", state=True)
    try:
        for folder in (settings.state_dir, settings.output_dir, settings.errors_dir):
            assert (folder / LOCK_NAME).is_file()
        assert os.environ[HOLDER_ENV] == str(os.getpid())
        child = _take(settings, dict(os.environ))  # what a child of this process inherits
        assert child.returncode == 0 and "taken" in child.stdout, child.stderr
        stranger = _take(settings, {k: v for k, v in os.environ.items() if k != HOLDER_ENV})
        assert stranger.returncode != 0
        assert f"is in use by `kcap up` (PID {os.getpid()} on host" in stranger.stderr, stranger.stderr
    finally:
        locks.release()
    assert HOLDER_ENV not in os.environ
    again = _take(settings, dict(os.environ))
    assert again.returncode == 0 and "taken" in again.stdout, again.stderr
