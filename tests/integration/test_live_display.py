"""`kcap run` on a real terminal (a pseudo-terminal): a live panel of counts, the per-image
lines in the log files under the state folder, not on the screen."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable

import pytest

from shared.core.settings import Settings
from tests.conftest import REPO
from tests.integration.helpers import drop_images, routed_sources

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on_a_terminal(settings: Settings, *args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    env.pop("KCAP_BROKER_URL", None)  # the embedded Redis, as a new user runs it
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", *args, "run"],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed with the last process holding it
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = process.wait(timeout=240)
    reader.join(timeout=10)
    os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_the_terminal_shows_counts_and_the_log_files_hold_each_image(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(broker_url=None)
    names = drop_images(settings, 6, seed=71)
    code, screen = _run_on_a_terminal(settings)
    assert code == 0, screen[-3000:]
    assert len(routed_sources(settings)) == len(names)
    assert "output 6  clip-failed 0  errors 0" in screen, screen[-3000:]
    assert "img/s (last 10s)" in screen
    # Celery's per-task lines are in the worker's log file, not on the screen.
    assert "Task kcap.caption[" not in screen and " received" not in screen, screen[-3000:]
    logs = settings.state_dir / "logs"
    worker_log = (logs / "worker.log").read_text()
    assert worker_log.count("Task kcap.caption[") >= 2 * len(names)  # received + succeeded
    assert "Task kcap.route_batch[" in (logs / "router.log").read_text()


@pytest.mark.slow
def test_log_level_debug_puts_every_line_on_the_terminal_too(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(broker_url=None)
    drop_images(settings, 2, seed=72)
    code, screen = _run_on_a_terminal(settings, "--log-level", "DEBUG")
    assert code == 0, screen[-3000:]
    assert "Task kcap.caption[" in screen
