"""Supervising kcap's child processes: started together, restarted with back-off, stopped
together, never orphaned."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from shared.cli.exits import Exit
from shared.core.logs import console_is_quiet
from shared.core.parent_death import die_with_parent

log = logging.getLogger(__name__)


def kcap_argv(*args: str) -> list[str]:
    """The command line that runs `kcap ARGS` with this very interpreter."""
    return [sys.executable, "-m", "shared.cli.main", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = True
    # Where the child's output goes, a line at a time: None inherits this process's stderr.
    output: Callable[[str], None] | None = None
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0  # 0: not waiting to restart
    backoff_s: float = field(default=1.0)


class ProcessGroup:
    """Starts children in their own sessions (Ctrl-C reaches only us), restarts dead ones
    with back-off, and stops them all together.

    Back-off doubles from backoff_s up to max_backoff_s after each quick death, and starts
    over once a child has stayed up for stable_after_s: a worker that dies once a day is
    back in a second, a worker that crashes at start does not spin. A child that exits with
    Exit.ERROR said why it cannot run (a bad setting, a model it cannot load, --compile on a
    host without a compiler) and is not restarted: poll() reports it, and kcap stops with
    that message instead of repeating it forever.
    """

    def __init__(
        self,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        # Longer than a worker takes to load its models, so a worker that cannot start
        # backs off, and one killed after it ran (OOM killer, preemption) comes back at once.
        stable_after_s: float = 20.0,
        stop_timeout_s: float = 30.0,  # Settings.stop_timeout_s in kcap's own use
    ) -> None:
        self.children: list[Child] = []
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.stop_timeout_s = stop_timeout_s

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        restart: bool = True,
        output: Callable[[str], None] | None = None,
    ) -> Child:
        child = Child(name=name, argv=argv, env=env, restart=restart, output=output, backoff_s=self.backoff_s)
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        piped = child.output is not None
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else None,
            stderr=subprocess.STDOUT if piped else None,
            start_new_session=True,
            # A supervisor that dies abruptly takes its children with it. SIGKILL, because
            # a Celery worker's warm shutdown can wait forever on a broker that is gone; late
            # acks make a killed worker lose nothing.
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        if child.output is not None and child.process.stdout is not None:
            child.reader = threading.Thread(
                target=_forward_lines,
                args=(child.process.stdout, child.output),
                name=f"kcap-output-{child.name}",
                daemon=True,
            )
            child.reader.start()
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def poll(self) -> list[Child]:
        """Restart children that died; returns the ones that died and are not restarted."""
        dead: list[Child] = []
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None:
                continue
            if not child.restart or process.returncode == Exit.ERROR:
                dead.append(child)
                continue
            if child.next_start == 0.0:
                if now - child.started_at >= self.stable_after_s:
                    child.backoff_s = self.backoff_s  # it had been fine for a while
                child.next_start = now + child.backoff_s
                log.warning(
                    "%s exited with %s; restarting in %.1fs (restart %d)",
                    child.name,
                    process.returncode,
                    child.backoff_s,
                    child.restarts + 1,
                )
                child.backoff_s = min(child.backoff_s * 2, self.max_backoff_s)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.restarts += 1
                self._spawn(child)
        return dead

    def stop(self, *, timeout_s: float | None = None) -> None:
        """SIGTERM (Celery: warm shutdown) every child at once, newest first, then wait for
        them all against one deadline; SIGKILL the process group of what will not go."""
        if timeout_s is None:
            timeout_s = self.stop_timeout_s
        running = [
            (child, child.process)
            for child in reversed(self.children)
            if child.process is not None and child.process.poll() is None
        ]
        for _child, process in running:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for child, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.name, timeout_s)
            # The child's session may hold helpers of its own (a Celery pool, a Redis):
            # nothing of it outlives the group.
            _kill_group(process.pid)
            process.wait()
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=5)  # its pipe closed with the last process holding it
        self.children.clear()


def _forward_lines(stream: IO[bytes], output: Callable[[str], None]) -> None:
    with stream:
        for raw in stream:
            output(raw.decode("utf-8", errors="replace").rstrip("\n"))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(group: ProcessGroup) -> int:
    """Keep the children alive until SIGTERM/SIGINT, then stop them warmly.

    A child that stopped on an error of its own (a bad setting: every sibling would stop on
    it too) stops the group, and this returns Exit.ERROR, for `kcap up`, systemd or k8s to
    see."""
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping.wait(0.5):
            dead = group.poll()
            if dead:
                names = ", ".join(child.name for child in dead)
                # Under `kcap up`/`run` (a quiet console) kcap says the same: once is enough.
                level = logging.INFO if console_is_quiet() else logging.ERROR
                log.log(level, "%s stopped with an error (its message is above); stopping", names)
                return Exit.ERROR
    finally:
        group.stop()
    return Exit.OK
