"""Continuous batching across jobs: kcap's static decoder fed from every Celery pool thread.

Celery hands each job to its own pool thread; each submits its prepared image here and
blocks on a future, as with the Batcher. One runner thread owns the model. Between two
decode steps it prefills the images that have arrived into the slots that freed up, and
hands each row that ended back at once: its caption is postprocessed and scored with the
other rows that ended at that step, and its future resolved, while the rest go on
decoding. So the device stays full across jobs, and no image waits for the longest
caption of a batch.

Invariants:
- Images share a prefill only with images of an equal key (CaptionOptions, which holds one
  prompt). Rows of different keys may decode side by side, each in its own slot under its
  own prompt and token limit: a row's attention reads only its own slot.
- Keys the static decoder does not run (beams, repetition controls) run as whole batches
  through the engine's run_batch between two steps, flushed as the Batcher flushes them
  (max_size items, or the oldest waited max_wait_s).
- While rows decode, waiting images are prefilled at every step. When none decode, they
  wait until they fill the free slots or the oldest has waited max_wait_s: a first prefill
  of one image would leave the other slots to fill one step at a time.
- CUDA out-of-memory halves the slots and puts the rows that were decoding back at the
  head of their queue, to run again from their start: nothing is lost. At one slot it
  gives up, and those futures get the error (the task retries them).
- A worker killed mid-decode loses nothing: jobs are acknowledged late, after their result
  is sent, so Redis hands them out again.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.core.messages import CaptionOptions
from workers.captioning.batcher import KeyedQueue, Pending, resolve_batch
from workers.captioning.device import is_out_of_memory
from workers.captioning.engine import Captioned, Engine, Prepared, Streamed
from workers.captioning.families.kosmos2.kosmos2_decoder import SlotRow

log = logging.getLogger(__name__)

RunBatch = Callable[[CaptionOptions, list[Prepared]], list[Captioned]]
FinishRows = Callable[[CaptionOptions, list[Streamed]], list[Captioned]]


_Pending = Pending[Prepared, Captioned]


@dataclass(frozen=True)
class _Live:
    """An image in a slot: its key, and when it was prefilled (perf_counter)."""

    key: CaptionOptions
    pending: _Pending
    admitted: float


@dataclass
class _Work:
    """What the runner does next, outside the lock."""

    batch: tuple[CaptionOptions, list[_Pending]] | None = None
    admits: list[tuple[CaptionOptions, list[_Pending]]] = field(default_factory=list)


class DecodeStream(KeyedQueue[CaptionOptions, Prepared, Captioned]):
    """Submit (key, prepared image), get a future of its Captioned; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_size: int,
        max_wait_s: float,
        run_batch: RunBatch | None = None,
        finish_rows: FinishRows | None = None,
        name: str = "kcap-decode-stream",
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        super().__init__(name=name)
        self.engine = engine
        self.decoder = engine.static_decoder()
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._run_batch = run_batch or engine.run_batch
        self._finish_rows = finish_rows or engine.finish_streamed
        self._streams: dict[CaptionOptions, bool] = {}
        self._live: dict[int, _Live] = {}  # ticket -> an image in a slot
        self._tickets = itertools.count()

    # -- the runner ----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                if (work := self._take()) is None:
                    return
                if work.batch is not None:
                    key, batch = work.batch
                    resolve_batch(self._run_batch, key, [p.item for p in batch], [p.future for p in batch])
                for key, group in work.admits:
                    self._admit(key, group)
                self._step()
            except Exception as exc:  # a bug here must fail the waiting jobs, not hang them
                log.exception("the decode stream's runner failed; failing its images")
                self._fail_everything(exc)

    def _fail_everything(self, exc: Exception) -> None:
        self.decoder.evict()
        failed = [live.pending for live in self._live.values()]
        self._live.clear()
        with self._cond:
            for queue in self._pending.values():
                failed += queue
            self._pending.clear()
        for pending in failed:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _streamed(self, key: CaptionOptions) -> bool:
        if key not in self._streams:
            self._streams[key] = key.max_new_tokens >= 1 and self.engine.streams(key)
        return self._streams[key]

    def _take(self) -> _Work | None:
        """Block until there is work; None once stopped with nothing pending or decoding."""
        with self._cond:
            while True:
                now = time.monotonic()
                busy = self.decoder.busy > 0
                keys = sorted(self._pending, key=lambda k: self._pending[k][0].since)  # oldest first
                wait_s: float | None = None
                for key in keys:
                    if self._streamed(key):
                        continue
                    age = now - self._pending[key][0].since
                    if len(self._pending[key]) >= self.max_size or age >= self.max_wait_s or self._stopping:
                        return _Work(batch=(key, self._pop(key, self.max_size)))
                    wait_s = _sooner(wait_s, self.max_wait_s - age)
                streaming = [key for key in keys if self._streamed(key)]
                free = self.decoder.free_slots
                work = _Work()
                if streaming and free:
                    age = now - self._pending[streaming[0]][0].since
                    waiting = sum(len(self._pending[key]) for key in streaming)
                    if busy or waiting >= free or age >= self.max_wait_s or self._stopping:
                        work.admits = self._admits(streaming, free)
                    else:
                        wait_s = _sooner(wait_s, self.max_wait_s - age)
                if work.admits or busy:
                    return work
                if self._stopping and not self._pending:
                    return None
                self._cond.wait(wait_s)

    def _admits(
        self, streaming: list[CaptionOptions], free: int
    ) -> list[tuple[CaptionOptions, list[_Pending]]]:
        """Oldest key first, up to the free slots. A key whose prompt needs a longer cache
        than the busy one waits for the decoder to drain, and while it is the oldest,
        nothing else joins (so it is not passed over forever)."""
        admits = []
        for key in streaming:
            if not free:
                break
            if not self.decoder.fits(self.engine.prompt_inputs(key.prompt), key.max_new_tokens):
                break
            group = self._pop(key, free)
            free -= len(group)
            admits.append((key, group))
        return admits

    def _requeue(self, key: CaptionOptions, pendings: list[_Pending]) -> None:
        """Back at the head of their key's queue, with their first arrival time."""
        with self._cond:
            self._pending[key] = pendings + self._pending.get(key, [])

    # -- the work ------------------------------------------------------------
    def _admit(self, key: CaptionOptions, group: list[_Pending]) -> None:
        prompt = self.engine.prompt_inputs(key.prompt)
        if not self.decoder.fits(prompt, key.max_new_tokens):
            # An earlier key of this round gave an idle decoder a shorter cache.
            self._requeue(key, group)
            return
        rows = []
        started = time.perf_counter()
        for pending in group:
            ticket = next(self._tickets)
            self._live[ticket] = _Live(key, pending, started)
            rows.append(SlotRow(ticket=ticket, max_new_tokens=key.max_new_tokens))
        try:
            finished = self.decoder.admit(rows, [p.item.caption_pixels for p in group], prompt)
        except Exception as exc:
            self._failed(exc, [row.ticket for row in rows])
            return
        self._hand_back(finished)

    def _step(self) -> None:
        if not self.decoder.busy:
            return
        try:
            finished = self.decoder.step()
        except Exception as exc:
            self._failed(exc, [])
            return
        self._hand_back(finished)

    def _failed(self, exc: Exception, tickets: list[int]) -> None:
        """A prefill or a step raised: the images decoding (and those being admitted) run
        again at half the slots after out-of-memory, or fail."""
        retry = is_out_of_memory(exc) and self.decoder.slots > 1
        rows = self.decoder.halve() if retry else self.decoder.evict()
        live = [self._live.pop(ticket) for ticket in [row.ticket for row in rows] + tickets]
        if retry:
            log.warning(
                "out of memory in the static decoder; %d slots now, %d images to run again",
                self.decoder.slots,
                len(live),
            )
            by_key: dict[CaptionOptions, list[_Pending]] = defaultdict(list)
            for entry in sorted(live, key=lambda e: e.pending.since):
                by_key[entry.key].append(entry.pending)
            for key, pendings in by_key.items():
                self._requeue(key, pendings)
            return
        log.exception("the static decoder failed with %d images in its slots", len(live))
        for entry in live:
            entry.pending.future.set_exception(exc)

    def _hand_back(self, finished: list[SlotRow]) -> None:
        """Caption, score and resolve the rows that ended, one group per key."""
        if not finished:
            return
        now = time.perf_counter()
        by_key: dict[CaptionOptions, list[tuple[_Live, SlotRow]]] = defaultdict(list)
        for row in finished:
            live = self._live.pop(row.ticket)
            by_key[live.key].append((live, row))
        for key, pairs in by_key.items():
            streamed = [
                Streamed(item=live.pending.item, ids=row.ids, caption_s=now - live.admitted)
                for live, row in pairs
            ]
            resolve_batch(self._finish_rows, key, streamed, [live.pending.future for live, _ in pairs])


def _sooner(wait_s: float | None, left_s: float) -> float:
    return max(0.0, left_s if wait_s is None else min(wait_s, left_s))
