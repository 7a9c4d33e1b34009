"""`kcap.caption_shard`: caption one shard (or chunk) and file it, all in the caption worker.

Order, so that a worker killed at any point is safe to redo: the outputs are written under
temporary names and put in place, then the done marker (CAPTIONS/_done/{chunk}.json), then
the board says done, and only then is the message acknowledged (late acks). A killed worker's
shard comes back after the visibility timeout and is redone under the same names.

A shard job runs longer than Redis's visibility timeout, so while it works the worker renews
a lease on it and marks its message as just delivered (ShardBoard.hold_message); a second
delivery all the same (a Redis restart, a missed mark) waits while the lease is alive and
takes the job only when its holder is gone. Deaths are counted with Attempts as for
`kcap.caption`: a shard its worker died on too often is recorded as failed, with a report
in CAPTIONS/_failed/{chunk}.json, and never handed out again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from shared.core.attempts import Attempts
from shared.core.celery_app import SHARD_TASK
from shared.core.errors import DecodeError
from shared.core.message_guard import GuardedStrategy
from shared.core.messages import ShardJob
from shared.core.metrics import observe_shard_samples
from shared.core.shard_board import PROGRESS_EVERY, PROGRESS_EVERY_S, ShardBoard, ShardEntry, ShardState
from shared.core.storage_env import storage_options_from_env
from shared.shards.markers import DoneMarker, write_marker
from shared.shards.reading import read_samples
from shared.shards.refs import ShardRef
from shared.shards.staging import put_whole
from shared.shards.storage import join_url
from workers.captioning.shard_files import ShardFiler
from workers.captioning.shard_samples import ShardPipeline
from workers.captioning.shard_turns import ShardTap, ShardTurns

log = logging.getLogger(__name__)

SHARD_RETRIES = 2
FAILED_FOLDER = "_failed"  # CAPTIONS/_failed/{chunk}.json: why a shard job was given up on
SHARD_MESSAGE_LIMIT_BYTES = 64 * 1024
# Shard jobs one worker runs side by side. Two: one shard's tail finishes while the next fills
# the batches. A delivery that finds no turn within TURN_WAIT_S goes back to the end of the
# queue (see shard_turns): the Celery pool threads stay free for hot-folder jobs, and other
# workers (other hosts) take the shard instead of this one holding it.
SHARDS_AT_ONCE = 2
TURN_WAIT_S = 2.0


class NoTurn(Exception):
    """This worker already runs its share of shard jobs: the delivery is given back."""


def lease_ttl_s(visibility_timeout_s: int) -> int:
    """Short enough that a dead worker's lease is gone before its message comes back."""
    return max(3, min(60, visibility_timeout_s // 3))


def check_shard_arguments(args: list[Any], kwargs: dict[str, Any]) -> None:
    (job_data,) = args
    try:
        ShardJob.from_dict(job_data)
    except DecodeError as exc:
        raise DecodeError(f"not a shard job: {exc}", payload=exc.payload) from exc


class ShardWorker:
    """What a caption worker does with a shard job, Celery aside."""

    def __init__(
        self,
        pipeline: ShardPipeline,
        board: ShardBoard,
        attempts: Attempts,
        *,
        worker: str,
        max_worker_deaths: int,
        visibility_timeout_s: int,
        turn_wait_s: float = TURN_WAIT_S,
        tap: ShardTap | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.board = board
        self.attempts = attempts
        self.worker = worker
        self.max_worker_deaths = max_worker_deaths
        self.ttl_s = lease_ttl_s(visibility_timeout_s)
        self.turns = ShardTurns(SHARDS_AT_ONCE, turn_wait_s, tap)
        self.storage_options = storage_options_from_env()

    @contextlib.contextmanager
    def held(self, job: ShardJob, task_id: str | None, *, lease: bool) -> Iterator[None]:
        """While the block runs: keep this delivery from coming back (and the lease, if ours)."""
        stop = threading.Event()
        tag = self.board.delivery_tag_of(task_id) if task_id else None

        def beat() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    if tag is not None:
                        self.board.hold_message(tag)
                    if lease:
                        self.board.renew_lease(job.job_id, self.worker, ttl_s=self.ttl_s)
                except Exception as exc:  # a Redis hiccup: the next beat tries again
                    log.warning("shard %s: cannot renew its lease (%s)", job.chunk, exc)

        thread = threading.Thread(target=beat, name=f"kcap-lease-{job.chunk}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def handle(self, job: ShardJob, *, task_id: str | None, final_try: bool) -> None:
        """Run one delivery of a shard job. Raises NoTurn when this worker already runs its
        share of shard jobs (the task gives the message back), and what failed otherwise, for
        the task to retry, unless this is the final try: then the job is recorded as failed."""
        if not self.turns.take():
            with self.held(job, task_id, lease=False):
                if not self.turns.wait():
                    raise NoTurn(f"this worker already runs {SHARDS_AT_ONCE} shard jobs")
        try:
            with self.held(job, task_id, lease=False):
                if not self.take_lease(job):
                    return  # the other delivery finished it
            try:
                self.work(job, task_id=task_id, final_try=final_try)
            finally:
                self.board.release_lease(job.job_id, self.worker)
        finally:
            self.turns.give()

    def take_lease(self, job: ShardJob) -> bool:
        """Take the job's lease, waiting while another delivery's is alive; False when that
        delivery finished the job meanwhile."""
        if self.board.take_lease(job.job_id, self.worker, ttl_s=self.ttl_s):
            return True
        log.warning("shard %s: delivered again while its lease is held; waiting for it", job.chunk)
        while not self.board.take_lease(job.job_id, self.worker, ttl_s=self.ttl_s):
            entry = self.board.entry(job.job_id)
            if entry is not None and entry.state in (ShardState.DONE, ShardState.FAILED):
                return False
            time.sleep(1.0)
        return True

    def work(self, job: ShardJob, *, task_id: str | None, final_try: bool) -> None:
        """The job under its lease: counted as a start (deaths), captioned, filed, marked."""
        entry = self.board.entry(job.job_id)
        if entry is not None and entry.state is ShardState.DONE:
            return  # delivered again after it was done, before its ack: nothing to redo
        expected = entry.expected if entry is not None else None  # the planner's count, if known
        # Every death counts, also one beside another shard job: as a caption batch, the shard
        # jobs a worker holds die together (see shared.core.attempts).
        with self.attempts.attempt(job.job_id) as earlier:
            deaths = earlier.total
            try:
                if deaths >= self.max_worker_deaths:
                    reason = f"worker died {deaths} time{'' if deaths == 1 else 's'} on this shard"
                    self.fail(job, reason, expected=expected)
                    return
                with self.held(job, task_id, lease=True):
                    self.caption(job, expected=expected)
            except Exception as exc:
                if final_try:
                    log.exception("shard %s: giving up", job.chunk)
                    self.fail(job, f"{type(exc).__name__}: {exc}", expected=expected)
                    return
                raise

    def caption(self, job: ShardJob, *, expected: int | None) -> None:
        started = time.time()
        ref = ShardRef.from_dict(job.shard)
        entry = ShardEntry(state=ShardState.RUNNING, chunk=job.chunk, expected=expected, worker=self.worker)
        self.board.update(job.job_id, entry)
        samples = read_samples(
            ref,
            start=job.start,
            stop=job.stop,
            storage_options=self.storage_options or None,
            max_image_bytes=job.max_image_bytes,
        )
        filer = ShardFiler(job, worker=self.worker, storage_options=self.storage_options)
        try:
            reported, last = 0, time.monotonic()
            for sample, result in self.pipeline.results(job, samples):
                observe_shard_samples(filer.file(sample, result))
                filed = sum(filer.counts.values())
                if filed - reported >= PROGRESS_EVERY or time.monotonic() - last >= PROGRESS_EVERY_S:
                    self.board.update(job.job_id, self._entry(entry, filer), new_samples=filed - reported)
                    reported, last = filed, time.monotonic()
            filer.commit()
        except BaseException:
            filer.abort()
            raise
        marker = DoneMarker(
            name=job.chunk,
            settings_hash=job.settings_hash,
            counts=dict(filer.counts),
            errors=dict(filer.errors),
            source=job.url,
            outputs=filer.outputs,
            worker=self.worker,
            started_at=started,
        )
        write_marker(job.captions_url, marker, storage_options=self.storage_options or None)  # last
        done = ShardEntry(
            state=ShardState.DONE, chunk=job.chunk, expected=entry.expected, counts=dict(filer.counts)
        )
        self.board.update(job.job_id, done, new_samples=sum(filer.counts.values()) - reported)
        log.info("shard %s: %s in %.1fs", job.chunk, dict(filer.counts), time.time() - started)

    def _entry(self, entry: ShardEntry, filer: ShardFiler) -> ShardEntry:
        return ShardEntry(
            state=ShardState.RUNNING,
            chunk=entry.chunk,
            expected=entry.expected,
            counts=dict(filer.counts),
            worker=self.worker,
        )

    def fail(self, job: ShardJob, reason: str, *, expected: int | None) -> None:
        """Record a shard job as failed: on the board and in CAPTIONS/_failed/{chunk}.json (no
        done marker, so a later run takes it up again)."""
        log.error("shard %s (%s): failed: %s", job.chunk, job.url, reason)
        report = {
            "name": job.chunk,
            "source": job.url,
            "start": job.start,
            "stop": job.stop,
            "reason": reason,
            "worker": self.worker,
            "time": time.time(),
            "settings_hash": job.settings_hash,
        }
        try:
            url = join_url(job.captions_url, FAILED_FOLDER, f"{job.chunk}.json")
            put_whole(
                url,
                json.dumps(report, indent=1).encode("utf-8"),
                storage_options=self.storage_options or None,
            )
        except Exception as exc:  # the board still says why
            log.warning("shard %s: cannot write its failure report (%s)", job.chunk, exc)
        entry = ShardEntry(
            state=ShardState.FAILED,
            chunk=job.chunk,
            expected=expected,
            worker=self.worker,
            reason=reason,
        )
        self.board.update(job.job_id, entry)


def register_shard_task(app: Celery, shards: ShardWorker) -> Task:
    strategy = GuardedStrategy(max_bytes=SHARD_MESSAGE_LIMIT_BYTES, check=check_shard_arguments)

    @app.task(name=SHARD_TASK, bind=True, max_retries=SHARD_RETRIES, Strategy=strategy)
    def caption_shard(self: Task, job_data: dict[str, Any]) -> None:
        job = ShardJob.from_dict(job_data)  # GuardedStrategy let through only shard jobs
        attempt = self.request.retries + 1
        try:
            shards.handle(job, task_id=self.request.id, final_try=attempt > SHARD_RETRIES)
        except NoTurn as exc:
            raise Reject(str(exc), requeue=True) from exc
        except Exception as exc:
            log.warning("shard %s: attempt %d failed (%r); retrying", job.chunk, attempt, exc)
            raise self.retry(exc=exc, countdown=2**attempt) from exc

    return caption_shard
