"""What `kcap up` and `kcap run` show while they work.

On a terminal: a live panel pinned at the bottom (counts by outcome, jobs in flight, the rate
over the last 10 s, the ETA at that rate), with warnings and errors (this process's and its children's)
printed above it. Per-image lines go to the log files under the state folder instead (or to
the terminal too with --log-level DEBUG). Off a terminal (systemd, CI, a pipe): the same
counts as a log line every 10 s, and every line as it comes.
"""

from __future__ import annotations

import logging
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import redis

from shared.core.inflight import LIVE_RATE_WINDOW_S, InFlight, Snapshot
from shared.core.logs import console_level, set_console
from shared.core.naming import shown
from shared.core.outcomes import Outcome
from shared.core.shard_board import ShardBoard, ShardSnapshot, ShardState

log = logging.getLogger("kcap.progress")


def progress_line(snapshot: Snapshot) -> str:
    counts = snapshot.counts
    eta = "-" if snapshot.eta_s is None or not snapshot.in_flight else f"{snapshot.eta_s:.0f}s"
    return (
        f"output {counts[Outcome.OUTPUT]}  clip-failed {counts[Outcome.CLIP_FAILED]}  "
        f"errors {counts[Outcome.ERRORS]}  in flight {snapshot.in_flight}  "
        f"{snapshot.images_per_s:.2f} img/s (last {LIVE_RATE_WINDOW_S:.0f}s)  ETA {eta}"
    )


def shard_progress_line(snapshot: ShardSnapshot) -> str:
    """Dataset mode's line: samples by outcome, shards by state, samples/s and the ETA."""
    samples, shards = snapshot.samples, snapshot.shards
    eta = "-" if snapshot.eta_s is None else f"{snapshot.eta_s:.0f}s"
    return (
        f"samples: output {samples[Outcome.OUTPUT]}  clip-failed {samples[Outcome.CLIP_FAILED]}  "
        f"errors {samples[Outcome.ERRORS]}  |  shards: done {shards[ShardState.DONE]}  "
        f"running {shards[ShardState.RUNNING]}  failed {shards[ShardState.FAILED]}  "
        f"remaining {shards[ShardState.QUEUED]}  |  {snapshot.samples_per_s:.2f} samples/s  ETA {eta}"
    )


class _AboveTheDisplay(logging.Handler):
    """Log records printed above the live panel instead of through it."""

    def __init__(self, display: Progress) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.emit(self.format(record))
        except Exception:
            self.handleError(record)


class Progress:
    """The live display of one `kcap up`/`kcap run`."""

    def __init__(
        self,
        *,
        title: str,
        log_dir: Path,
        log_every_s: float = 10.0,
        live: bool | None = None,
    ) -> None:
        self.inflight: InFlight | None = None  # set by watch() once the broker is up
        self.started_at = time.time()
        self._counts_at_start: dict[Outcome, int] | None = {}
        self._final: Snapshot | None = None  # the last one read; close() reads it once more
        self.shards: ShardBoard | None = None  # dataset mode: set by watch_shards()
        self.title = title
        self.log_dir = log_dir
        self.log_every_s = log_every_s
        self._last_log = 0.0
        self._lock = threading.Lock()
        self._live: Any = None
        self._echo: list[Any] | None = None  # the terminal's settings before _echo_off
        self._closed = False
        if sys.stdout.isatty() if live is None else live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(), refresh_per_second=4, transient=False)
            self._echo = _echo_off(sys.stdout)
            self._live.start()
            # This process's own warnings now print above the panel, not through it.
            set_console(_AboveTheDisplay(self), level=console_level())

    def watch(self, inflight: InFlight) -> None:
        """Start showing the counts of this kcap instance."""
        self.inflight = inflight
        self.started_at = time.time()
        # The counts persist with the embedded Redis: this run's are what they gain from now.
        self._counts_at_start = None
        self._read_counts_at_start()

    def _read_counts_at_start(self) -> None:
        if self.inflight is None or self._counts_at_start is not None:
            return
        try:
            self._counts_at_start = self.inflight.counts()
        except (redis.exceptions.RedisError, OSError):
            # Redis restarting as the run starts: read them once it is back (the stack brings it
            # back; nothing is routed without it, so nothing is missed meanwhile).
            return

    def run_counts(self) -> dict[Outcome, int] | None:
        """What this run routed, by outcome, as close() last read it; None: never read."""
        if self._final is None:
            return None
        start = self._counts_at_start or {}
        return {outcome: count - start.get(outcome, 0) for outcome, count in self._final.counts.items()}

    def watch_shards(self, board: ShardBoard) -> None:
        """Show dataset mode's counts too (samples and shards), once there are shard jobs."""
        self.shards = board
        self._started = time.monotonic()

    def _snapshot_line(self) -> str:
        if self.inflight is None and self.shards is None:
            return "starting: broker, workers and models"
        try:
            self._read_counts_at_start()
            lines = []
            if self.inflight is not None:
                self._final = self.inflight.snapshot(window_s=LIVE_RATE_WINDOW_S)
                lines.append(progress_line(self._final))
            if self.shards is not None:
                # Shard samples are counted as each shard's worker reports them (in steps), so
                # their rate is over the time since the first shard job, up to the board's window.
                shards = self.shards.snapshot(window_s=time.monotonic() - self._started)
                if shards.total_shards or not lines:
                    lines.append(shard_progress_line(shards))
            return "\n".join(lines)
        except (redis.exceptions.RedisError, OSError) as exc:
            # Redis restarting: the stack keeps running, the line says why it is stale.
            return f"waiting for Redis ({type(exc).__name__})"

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.text import Text

        body = Text(self._snapshot_line())
        body.append(f"\nlogs: {self.log_dir}", style="dim")
        return Panel(body, title=self.title, title_align="left")

    def emit(self, line: str) -> None:
        """Print a line (a log record, a child's output) above the panel; thread-safe."""
        line = shown(line)  # a file name that is not UTF-8, as \xNN: a terminal takes only UTF-8
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(line), soft_wrap=True)
            return
        with self._lock:
            print(line, file=sys.stderr, flush=True)

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info("%s", self._snapshot_line())

    def close(self) -> None:
        """Show the final counts (call it while the broker is still up); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            _restore(sys.stdout, self._echo)
            set_console(logging.StreamHandler(), level=console_level())
        else:
            log.info("%s", self._snapshot_line())


def _echo_off(stream: Any) -> list[Any] | None:
    """Stop the terminal echoing keys while the panel shows; returns its settings to restore.

    Ctrl-C echoes "^C" where the cursor is: at the end of the panel's last line, a line as
    wide as the terminal, where it wraps to a new line. The panel's next redraw, moving up
    its height from one line lower, then left its old top border behind.
    """
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO  # the local modes
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (OSError, ValueError, termios.error):
        return None  # not a terminal after all
    return saved


def _restore(stream: Any, saved: list[Any] | None) -> None:
    if saved is None:
        return
    try:
        termios.tcsetattr(stream.fileno(), termios.TCSANOW, saved)
    except (OSError, ValueError, termios.error):
        pass
