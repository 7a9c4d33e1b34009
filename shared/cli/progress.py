"""A live progress line for `kcap up` / `kcap run`: rich on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import redis

from shared.core.inflight import InFlight
from shared.core.outcomes import Outcome

log = logging.getLogger("kcap.progress")


class Progress:
    """Counts by outcome, images/s and the ETA of what is in flight."""

    def __init__(self, inflight: InFlight, *, log_every_s: float = 10.0) -> None:
        self.inflight = inflight
        self.log_every_s = log_every_s
        self._last_log = 0.0
        self._started = time.monotonic()
        self._live: Any = None
        if sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=4, transient=False)
            self._live.start()

    def _line(self) -> str:
        try:
            return self._counts_line()
        except (redis.exceptions.RedisError, OSError) as exc:
            # Redis restarting: the stack keeps running, the line says why it is stale.
            return f"waiting for Redis ({type(exc).__name__})"

    def _counts_line(self) -> str:
        snap = self.inflight.snapshot()
        counts = snap.counts
        eta = "-" if snap.eta_s is None or not snap.in_flight else f"{snap.eta_s:.0f}s"
        return (
            f"output {counts[Outcome.OUTPUT]}  clip-failed {counts[Outcome.CLIP_FAILED]}  "
            f"errors {counts[Outcome.ERRORS]}  in flight {snap.in_flight}  "
            f"{snap.images_per_s:.2f} img/s  ETA {eta}"
        )

    def _render(self) -> Any:
        from rich.text import Text

        return Text(self._line())

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info("%s", self._line())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
        else:
            log.info("%s", self._line())
