"""The producer: startup scan, live events, periodic reconcile, all through one gate."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis
from kombu.exceptions import OperationalError

from producer.enqueue import Enqueuer, Offer
from producer.scan import InputFilter
from producer.stability import StabilityGate
from producer.watcher import start_observer
from shared.core.blobs import Blobs
from shared.core.celery_app import make_app
from shared.core.inflight import InFlight
from shared.core.leftovers import DEFAULT_OLDER_THAN_S as LEFTOVER_AGE_S
from shared.core.leftovers import sweep_leftovers
from shared.core.publisher import CeleryPublisher, Publisher
from shared.core.settings import Settings

log = logging.getLogger(__name__)

_TICK_S = 0.1
_BROKER_RETRY_S = 1.0
_BROKER_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OperationalError, OSError)


class Producer:
    """Finds images under the input folder and enqueues each one once."""

    def __init__(
        self, settings: Settings, *, publisher: Publisher | None = None, inflight: InFlight | None = None
    ) -> None:
        self.settings = settings
        self.filter = InputFilter(settings)
        self.gate = StabilityGate(stable_after_s=settings.stable_after_s)
        self.inflight = inflight or InFlight.connect(settings)
        if publisher is None:
            publisher = CeleryPublisher(
                make_app(settings), caption_queue=settings.caption_queue, route_queue=settings.route_queue
            )
        self.enqueuer = Enqueuer(settings, publisher, self.inflight, blobs=Blobs.connect(settings))
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._next_sweep = 0.0  # monotonic time of the next left-over sweep

    def stop(self) -> None:
        self._stop.set()

    def scan(self, folder: Path | None = None) -> int:
        """Put every candidate under folder (default: the root) through the gate; how many.

        A full scan (at start, then at most once per sweep age) also sweeps kcap's abandoned
        temp files out of the destination folders. More often would walk those trees, which
        hold the whole dataset, for nothing: a temp file younger than the age is never taken.
        """
        if folder is None and time.monotonic() >= self._next_sweep:
            sweep_leftovers(self._destinations(), older_than_s=LEFTOVER_AGE_S)
            self._next_sweep = time.monotonic() + LEFTOVER_AGE_S
        count = 0
        for path in self.filter.walk(folder):
            self.gate.touch(path)
            count += 1
        return count

    def _destinations(self) -> list[Path | None]:
        return [self.settings.output_dir, self.settings.clip_failed_dir, self.settings.errors_dir]

    def _scan_dir(self, folder: Path) -> None:
        """A folder moved or made inside the root brings files that had no events of their own."""
        # os.path.isdir: False, never an error, for a folder deeper than PATH_MAX (the walk
        # from a shallower folder, or the next reconcile, finds what it holds).
        if os.path.isdir(folder):  # walk() checks every file against the filter
            self.scan(folder)

    def _reconcile_if_due(self, due_at: float) -> float:
        """Rescan when due: catches what events missed (network filesystems, a full inotify
        queue), frees claims of jobs that finished unseen and resends stale ones."""
        if time.monotonic() < due_at:
            return due_at
        self.scan()
        return time.monotonic() + self.settings.reconcile_every_s

    def pump(self) -> int:
        """Enqueue what the gate releases; returns how many left the gate."""
        ready = self.gate.due()
        for path in ready:
            if self._stop.is_set():
                self.gate.touch(path)  # not handled: leave it for the next start
                continue
            rel = self.filter.relative(path)
            if rel is None:
                continue
            try:
                outcome = self.enqueuer.offer(path, rel)
            except _BROKER_ERRORS as exc:
                # Redis is restarting or unreachable: keep the file for the next round.
                log.warning(
                    "cannot enqueue %s (%s: %s); retrying in %.0fs",
                    rel,
                    type(exc).__name__,
                    exc,
                    _BROKER_RETRY_S,
                )
                self.gate.touch(path)
                self._stop.wait(_BROKER_RETRY_S)
                continue
            self.stats[outcome.status] += 1
            if outcome.status is Offer.QUEUED:
                log.debug("queued %s as %s", rel, outcome.job_id)
        return len(ready)

    def run_forever(self) -> None:
        """Watch until stop(): scan at start, then events, and a reconcile scan now and then."""
        root = self.filter.root
        observer = start_observer(
            root,
            self.gate,
            recursive=self.settings.recursive,
            polling=self.settings.polling,
            poll_interval_s=self.settings.poll_interval_s,
            on_new_dir=self._scan_dir,
        )
        found = self.scan()
        log.info("watching %s (%d files found at start)", root, found)
        next_reconcile = time.monotonic() + self.settings.reconcile_every_s
        try:
            while not self._stop.is_set():
                self.pump()
                next_reconcile = self._reconcile_if_due(next_reconcile)
                self._stop.wait(_TICK_S)
        finally:
            observer.stop()
            observer.join(timeout=5)

    def run_backlog(self, *, on_progress: Callable[[], None] | None = None) -> Counter[str]:
        """Enqueue everything under the root once, then wait until all of it is routed."""
        self.scan()
        while len(self.gate) and not self._stop.is_set():
            self.pump()
            if on_progress is not None:
                on_progress()
            self._stop.wait(_TICK_S)
        next_reconcile = time.monotonic() + self.settings.reconcile_every_s
        while not self._stop.is_set():
            try:
                if not self.inflight.size():
                    break
                if on_progress is not None:
                    on_progress()
                self.pump()
                next_reconcile = self._reconcile_if_due(next_reconcile)
            except _BROKER_ERRORS as exc:
                log.warning("waiting for Redis (%s)", exc)
            self._stop.wait(0.2)
        return self.stats
