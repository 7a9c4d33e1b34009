"""Child processes that start together and stop together, with no orphans."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = True
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff_s: float = field(default=1.0)


class ProcessGroup:
    """Starts children in their own sessions (Ctrl-C reaches only us), restarts dead ones
    with back-off, and stops them in reverse order of start."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str], restart: bool = True) -> Child:
        child = Child(name=name, argv=argv, env=env, restart=restart)
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def poll(self) -> list[Child]:
        """Restart children that died; returns the ones that died and are not restarted."""
        dead: list[Child] = []
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None:
                continue
            if not child.restart:
                dead.append(child)
                continue
            if child.next_start == 0.0:
                child.next_start = now + child.backoff_s
                log.warning(
                    "%s exited with %s; restarting in %.0fs", child.name, process.returncode, child.backoff_s
                )
                child.backoff_s = min(child.backoff_s * 2, 60.0)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.restarts += 1
                self._spawn(child)
        return dead

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """SIGTERM (Celery: warm shutdown) each child, newest first; SIGKILL what will not go."""
        for child in reversed(self.children):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.name, timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.children.clear()
