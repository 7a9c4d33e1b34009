"""The write-stability gate: a file is taken once its size and mtime stop changing."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float


class StabilityGate:
    """Collects candidate paths and releases each once it has been still for stable_after_s.

    A copy in progress keeps changing size or mtime, so it is held back; a path that vanishes
    is dropped (deleted after its event, before it was read).
    """

    def __init__(self, *, stable_after_s: float) -> None:
        self.stable_after_s = stable_after_s
        self._seen: dict[Path, _Seen | None] = {}
        self._lock = threading.Lock()

    def touch(self, path: Path) -> None:
        """Note an event for path: it restarts the wait."""
        with self._lock:
            self._seen[path] = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def due(self, *, now: float | None = None) -> list[Path]:
        """Paths whose size and mtime have not changed for stable_after_s; they leave the gate."""
        now = time.monotonic() if now is None else now
        ready: list[Path] = []
        with self._lock:
            paths = list(self._seen.items())
        for path, _seen in paths:
            try:
                stat = os.stat(path)
            except OSError as exc:
                with self._lock:
                    self._seen.pop(path, None)
                if exc.errno == errno.ENAMETOOLONG:
                    ready.append(path)  # deeper than PATH_MAX: never stat-able, refused as it is
                else:
                    log.info("%s vanished before it was read; nothing to do", path)
                continue
            with self._lock:
                if path not in self._seen:
                    continue
                current = self._seen[path]
                if current is None or (current.size, current.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    # First look, or it changed since: (re)start the clock. A touch() since the
                    # last look also restarts it, because it reset the entry to None.
                    current = _Seen(stat.st_size, stat.st_mtime_ns, now)
                    self._seen[path] = current
                    if self.stable_after_s > 0:
                        continue
                if now - current.stable_since >= self.stable_after_s:
                    del self._seen[path]
                    ready.append(path)
        return ready
