"""A user's slips on real processes: a second `kcap up`, `kcap run` or `kcap router` on folders
that a running kcap owns is refused with its PID, and the first goes on untouched; a killed
holder blocks nobody; a mistyped input folder stops `kcap run`, and `kcap up` makes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.cli.exits import Exit
from shared.cli.main import main
from shared.core.folder_lock import LOCK_NAME
from shared.core.naming import METADATA_NAME
from shared.core.settings import Settings
from tests.conftest import REPO, Processes, kcap_to_the_end, wait_for
from tests.integration.helpers import drop_images, routed_sources


def _kcap(settings: Settings, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    """A kcap command as a user types it beside the first: its own process, to the end."""
    env = {k: v for k, v in os.environ.items() if k != "KCAP_BROKER_URL"}
    env.update(settings.to_env(), PYTHONPATH=str(REPO))
    return kcap_to_the_end(env, *args, timeout_s=timeout_s)


def _assert_refused(done: subprocess.CompletedProcess[str], *, folder: Path, pid: int) -> None:
    assert done.returncode == Exit.ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    said = done.stderr
    assert f"{folder} is in use by `kcap up` (PID {pid} on host" in said, said[-2000:]
    assert f"kill {pid}" in said and "Traceback" not in said, said[-2000:]


def _metadata_lines(settings: Settings) -> list[str]:
    assert settings.output_dir is not None
    path = settings.output_dir / METADATA_NAME
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow  # 5-7 s: keeps `make test` within its 6 minutes on a clean clone
def test_a_second_kcap_on_the_folders_of_a_running_kcap_up_is_refused_with_its_pid(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    settings = make_settings(broker_url=None)
    assert settings.input_dir is not None and settings.output_dir is not None
    settings.input_dir.rmdir()  # a new user's first `kcap up`: the inbox is made and said so
    first = procs.kcap("up", "--no-flower", settings=settings)
    broker_file = settings.state_dir / "broker_url"
    wait_for(broker_file.exists, timeout_s=60, what="kcap up's broker_url file", logs=procs.tail)
    url = broker_file.read_text()
    assert settings.input_dir.is_dir()
    assert f"kcap up: created the input folder {settings.input_dir}" in procs.logs()
    holder = json.loads((settings.state_dir / LOCK_NAME).read_text())
    assert holder["pid"] == first.pid and holder["command"] == "kcap up"

    # The same state folder: a second `kcap up`, and a `kcap run`.
    for command in ("up", "run"):
        done = _kcap(settings, command, *(["--no-flower"] if command == "up" else []))
        _assert_refused(done, folder=settings.state_dir, pid=first.pid)
    # A state folder of its own, the same output folder: the route worker's folders are taken.
    elsewhere = settings.replace(state_dir=tmp_path / "other-state")
    _assert_refused(_kcap(elsewhere, "up", "--no-flower"), folder=settings.output_dir, pid=first.pid)
    # A route worker of its own on those folders, joining the first's Redis.
    router = _kcap(settings.replace(broker_url=url.strip()), "router")
    _assert_refused(router, folder=settings.output_dir, pid=first.pid)

    # The first goes on: its broker file, its Redis (status finds it), and filing each image once.
    assert first.poll() is None, procs.tail()
    assert broker_file.read_text() == url
    status = _kcap(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    names = drop_images(settings, 3, seed=61)
    wait_for(lambda: len(routed_sources(settings)) >= 3, timeout_s=120, what="3 routed", logs=procs.tail)
    assert routed_sources(settings) == names
    assert len(_metadata_lines(settings)) == 3

    # A holder killed outright holds nothing: the kernel dropped its lock with it.
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    again = _kcap(settings, "run")
    assert again.returncode == Exit.OK, again.stdout[-2000:] + again.stderr[-2000:]
    assert routed_sources(settings) == names and len(_metadata_lines(settings)) == 3


def test_kcap_run_on_a_missing_input_folder_says_so_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "inptu"
    flags = [f"--output-dir={tmp_path / 'out'}", f"--state-dir={tmp_path / 'state'}"]
    assert main(["run", f"--input-dir={typo}", *flags]) == Exit.ERROR
    err = capsys.readouterr().err
    assert f"the input folder {typo} does not exist" in err and "--input-dir" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.iterdir()) == []
