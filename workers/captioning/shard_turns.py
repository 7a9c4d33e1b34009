"""How many shard jobs one caption worker runs at once, and its shard queue's tap.

A caption worker reserves as many messages as it has pool threads (a hundred or so), so it
would take a whole queue of shard jobs while it can run two. Those it cannot run go back to
the queue; and while both turns are taken the worker stops consuming the shard queue, so it
does not fetch them again and again (a round trip through Redis, a pool thread and a wait
each, on the host CPU that feeds the GPU), and workers on other hosts get them instead. It
consumes the queue again as soon as a turn frees.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

from celery import Celery, bootsteps

log = logging.getLogger(__name__)


class ShardTap:
    """Whether this worker consumes the shard queue; changed on the consumer's own thread
    (kombu's consumer is not thread-safe), through Celery's `call_soon`."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._open = True
        self._consumer: Any = None

    @property
    def attached(self) -> bool:
        return self._consumer is not None

    def attach(self, consumer: Any) -> None:
        """The worker's consumer (re)started: it consumes every queue it was started with, so
        close the tap again if our turns are taken."""
        with self._lock:
            self._consumer = consumer
        self._sync()

    def detach(self) -> None:
        with self._lock:
            self._consumer = None

    def set_open(self, open_: bool) -> None:
        with self._lock:
            self._open = open_
            consumer = self._consumer
        if consumer is not None:
            # One idempotent callback that reads the wanted state when it runs: Celery does not
            # keep callbacks in order, so "close" then "open" must not end closed.
            consumer.call_soon(self._sync)

    def _sync(self) -> None:
        with self._lock:
            consumer, want = self._consumer, self._open
        tasks = getattr(consumer, "task_consumer", None)
        if tasks is None:
            return
        try:
            consuming = tasks.consuming_from(self.queue)
            if want and not consuming:
                consumer.add_task_queue(self.queue)
            elif not want and consuming:
                consumer.cancel_task_queue(self.queue)
        except Exception as exc:  # a lost connection: the restarted consumer attaches again
            log.warning("cannot %s the shard queue (%s)", "resume" if want else "pause", exc)

    def install(self, app: Celery) -> None:
        """Hook the tap into the worker's consumer, after the step that starts its task consumer."""
        tap = self

        class ShardTapStep(bootsteps.StartStopStep):
            requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

            def start(self, parent: Any) -> None:
                tap.attach(parent)

            def stop(self, parent: Any) -> None:
                tap.detach()

        app.steps["consumer"].add(ShardTapStep)


class ShardTurns:
    """At most `at_once` shard jobs run; one more delivery may wait up to wait_s for a turn
    (so the next shard starts as one ends); any other is refused at once (given back)."""

    def __init__(self, at_once: int, wait_s: float, tap: ShardTap | None = None) -> None:
        self.at_once = at_once
        self.wait_s = wait_s
        self.tap = tap
        self._free = threading.Condition()
        self.running = 0
        self._waiting = 0

    def take(self) -> bool:
        """Take a turn at once if one is free; False when none is (see wait)."""
        with self._free:
            if self.running >= self.at_once:
                return False
            self._took()
            return True

    def wait(self) -> bool:
        """Wait up to wait_s for a turn. Only one delivery waits; with the tap attached, any
        other is refused at once. Without it (no Celery consumer to pause), a refused delivery
        would be fetched straight back: each waits instead, as a brake."""
        with self._free:
            if self._waiting and self.tap is not None and self.tap.attached:
                return False
            self._waiting += 1
            try:
                if not self._free.wait_for(lambda: self.running < self.at_once, timeout=self.wait_s):
                    return False
                self._took()
                return True
            finally:
                self._waiting -= 1

    def give(self) -> None:
        with self._free:
            self.running -= 1
            self._free.notify()
            self._tell_tap()

    def _took(self) -> None:
        self.running += 1
        self._tell_tap()

    def _tell_tap(self) -> None:
        if self.tap is not None:
            self.tap.set_open(self.running < self.at_once)
