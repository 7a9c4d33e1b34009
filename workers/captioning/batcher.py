"""Dynamic batching: flush at max_size items, or when the oldest has waited max_wait_s.

Celery hands each job to its own pool thread; each thread submits its prepared item here and
blocks on a future. One runner thread owns the model, so the device sees whole batches while
the pool threads decode and preprocess the next ones (the overlap).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


@dataclass
class Pending(Generic[I, R]):
    item: I
    future: Future[R]
    since: float = field(default_factory=time.monotonic)


class KeyedQueue(Generic[K, I, R]):
    """Items submitted under a key by many threads, each answered through a future, and one
    runner thread (the subclass's _loop) that takes them; stop() lets it finish them."""

    def __init__(self, *, name: str) -> None:
        self._pending: dict[K, list[Pending[I, R]]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def submit(self, key: K, item: I) -> Future[R]:
        future: Future[R] = Future()
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"{self._thread.name} is stopped")
            self._pending.setdefault(key, []).append(Pending(item, future))
            self._cond.notify()
        return future

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Run what is pending, then end the runner thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        raise NotImplementedError

    def _pop(self, key: K, count: int) -> list[Pending[I, R]]:
        """The first `count` items of key's queue, oldest first (called holding the lock)."""
        queue = self._pending[key]
        taken, rest = queue[:count], queue[count:]
        if rest:
            self._pending[key] = rest
        else:
            del self._pending[key]
        return taken


class Batcher(KeyedQueue[K, I, R]):
    """Groups submitted items by key (items batch only with equal keys) and runs them."""

    def __init__(
        self,
        run: Callable[[K, list[I]], list[R]],
        *,
        max_size: int,
        max_wait_s: float,
        name: str = "kcap-batcher",
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        super().__init__(name=name)
        self._run = run
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        # How many batches of each size ran (bounded by max_size keys, unlike a list).
        self.batch_sizes: Counter[int] = Counter()

    def _next_batch(self) -> tuple[K, list[Pending[I, R]]] | None:
        """Block until a batch is due; None once stopped with nothing left."""
        with self._cond:
            while True:
                now = time.monotonic()
                due: tuple[K, list[Pending[I, R]]] | None = None
                wait_s: float | None = None
                for key, queue in self._pending.items():
                    age = now - queue[0].since
                    if len(queue) >= self.max_size or age >= self.max_wait_s or self._stopping:
                        if due is None or queue[0].since < due[1][0].since:
                            due = (key, queue)
                    else:
                        left = self.max_wait_s - age
                        wait_s = left if wait_s is None else min(wait_s, left)
                if due is not None:
                    return due[0], self._pop(due[0], self.max_size)
                if self._stopping:
                    return None
                self._cond.wait(wait_s)

    def _loop(self) -> None:
        while (taken := self._next_batch()) is not None:
            key, batch = taken
            self.batch_sizes[len(batch)] += 1
            resolve_batch(self._run, key, [p.item for p in batch], [p.future for p in batch])


def resolve_batch(
    run: Callable[[K, list[I]], list[R]], key: K, items: list[I], futures: list[Future[R]]
) -> None:
    """Run one batch, and resolve each item's future with its result or all with the failure."""
    try:
        results = run(key, items)
        if len(results) != len(items):
            raise RuntimeError(f"batch runner returned {len(results)} results for {len(items)} items")
    except BaseException as exc:  # every waiter must hear about the failure
        log.exception("batch of %d failed", len(items))
        for future in futures:
            future.set_exception(exc)
        return
    for future, result in zip(futures, results, strict=True):
        future.set_result(result)
