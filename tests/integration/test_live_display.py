"""What a user sees on a real terminal (a pseudo-terminal, read back through a terminal
emulator): the live panel of counts, warnings, and at the end a summary. Nothing else: the
per-image lines, Redis's, Celery's and Flower's chatter are in the log files under the state
folder."""

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
import time
from collections.abc import Callable

import pyte
import pytest

from shared.core.embedded_redis import free_port
from shared.core.settings import Settings
from tests.conftest import REPO
from tests.integration.helpers import drop_images, routed_sources

COLUMNS = 160
# A log record of level WARNING or above, as kcap's processes format them.
WARNING_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (WARNING|ERROR|CRITICAL) ")


class Terminal:
    """kcap on a pseudo-terminal that is its controlling terminal, as in a shell: Ctrl-C typed
    there is echoed by the terminal and reaches kcap as SIGINT."""

    def __init__(self, settings: Settings, *args: str, extra_env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        env.pop("KCAP_BROKER_URL", None)  # the embedded Redis, as a new user runs it
        env.pop("KCAP_LOG_LEVEL", None)  # the default, as a new user runs it
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli.main", *args],
            env=env,
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the terminal closed with the last process holding it
                return
            if not data:
                return
            self.chunks.append(data)

    def wait_for(self, text: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in "\n".join(self.screen()):
            assert time.monotonic() < deadline, f"{text!r} never showed:\n" + "\n".join(self.screen())
            assert self.process.poll() is None, "kcap exited:\n" + "\n".join(self.screen())
            time.sleep(0.2)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, *, timeout_s: float = 240) -> int:
        code = self.process.wait(timeout=timeout_s)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code

    def screen(self) -> list[str]:
        """The lines the terminal shows, top to bottom (a tall screen: nothing scrolls off), a
        line that the terminal wrapped joined again."""
        screen = pyte.Screen(COLUMNS, 2000)
        pyte.ByteStream(screen).feed(b"".join(self.chunks))
        lines: list[str] = []
        wrapped = False
        for row in screen.display:
            if wrapped:
                lines[-1] += row.rstrip()
            else:
                lines.append(row.rstrip())
            # A full row that is not the panel's own edge went on on the next row.
            wrapped = row[-1] != " " and row[-1] not in "╮│╯"
        while lines and not lines[-1]:
            lines.pop()
        return lines


def outside(lines: list[str], *, summary_head: str) -> list[str]:
    """The lines that are neither the panel, a warning, nor the summary."""
    rest = []
    in_summary = False
    for line in lines:
        if line.startswith(summary_head):
            in_summary = True
            continue
        if in_summary and line.startswith("  "):
            continue
        in_summary = False
        if not line or line[0] in "╭│╰" or WARNING_LINE.match(line):
            continue
        rest.append(line)
    return rest


def test_the_terminal_shows_the_panel_warnings_and_a_summary_only(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(broker_url=None)
    names = drop_images(settings, 6, seed=71)
    assert settings.input_dir is not None
    (settings.input_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff not a picture")
    terminal = Terminal(settings, "run")
    code = terminal.finish()
    lines = terminal.screen()
    shown = "\n".join(lines)
    assert code == 0, shown
    assert len(routed_sources(settings)) == len(names) + 1
    # One panel, its final counts; the rate is the current one.
    assert [line for line in lines if line.startswith("╭")] == [
        next(line for line in lines if line.startswith("╭─ kcap run: "))
    ], shown
    assert "output 6  clip-failed 0  errors 1  in flight 0" in shown
    assert re.search(r"img/s \(last 10s\)", shown)
    # The summary: counts by folder, the error by kind, the one-sided threshold, where to look.
    assert "kcap run: 7 images filed" in shown
    assert re.search(rf"^  output +6  {settings.output_dir}$", shown, re.M), shown
    assert re.search(rf"^  errors +1  {settings.errors_dir}$", shown, re.M), shown
    assert re.search(r"^    1 BadImageError: ", shown, re.M), shown
    assert "hint: every scored image (6) scored at or above the threshold -1000 (clip)" in shown
    assert f"logs:   {settings.state_dir / 'logs'}" in shown
    assert f"report: kcap report {settings.output_dir} " in shown
    # Nothing else: no Redis start-up lines, no Celery shutdown notice, no INFO records, no
    # tokenizer warnings, no per-task lines.
    assert outside(lines, summary_head="kcap run: ") == [], shown
    assert "" not in lines, shown
    assert "Token indices" not in shown and "Warm shutdown" not in shown and " INFO " not in shown
    # ...which are all in the log files.
    logs = settings.state_dir / "logs"
    worker_log = (logs / "worker.log").read_text()
    assert worker_log.count("Task kcap.caption[") >= 2 * len(names)  # received + succeeded
    assert "Task kcap.route_batch[" in (logs / "router.log").read_text()
    assert "Warm shutdown" in worker_log
    assert "Reading config from stdin" in (settings.state_dir / "redis" / "redis.log").read_text()


@pytest.mark.slow
def test_ctrl_c_of_kcap_up_leaves_one_panel_and_prints_the_summary(
    make_settings: Callable[..., Settings],
) -> None:
    # Every image under the threshold: the summary says that it is the threshold.
    settings = make_settings(broker_url=None, flower_port=free_port(), threshold=1000.0)
    drop_images(settings, 4, seed=73)
    terminal = Terminal(settings, "up")
    terminal.wait_for("clip-failed 4  errors 0  in flight 0", timeout_s=180)
    time.sleep(1.0)  # a redraw or two with the final counts, as a user sees them before Ctrl-C
    terminal.type(b"\x03")
    code = terminal.finish()
    lines = terminal.screen()
    shown = "\n".join(lines)
    assert code == 0, shown
    assert len([line for line in lines if line.startswith("╭─ kcap up: ")]) == 1, shown
    assert "kcap up: 4 images filed" in shown
    assert "hint: every scored image (4) scored below the threshold 1000 (clip)" in shown
    # Flower asking the workers while they load their models is for its log file.
    assert outside(lines, summary_head="kcap up: ") == [], shown
    assert "" not in lines, shown
    assert "Inspect method" not in shown
    assert (settings.state_dir / "logs" / "flower.log").exists()


@pytest.mark.slow
def test_log_level_debug_puts_every_line_on_the_terminal_too(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(broker_url=None)
    drop_images(settings, 2, seed=72)
    # After the subcommand, as a setting: it reaches the worker processes too.
    terminal = Terminal(settings, "run", "--log-level", "DEBUG")
    code = terminal.finish()
    shown = "\n".join(terminal.screen())
    assert code == 0, shown
    assert "Task kcap.caption[" in shown
    assert re.search(r" DEBUG kcap-worker-process ", shown), shown
