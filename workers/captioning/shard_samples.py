"""A shard job's samples through the worker's own batcher or decode stream, in order, with
bounded memory.

Each sample becomes the Job the hot folder would have sent for it (its bytes beside the
message), is prepared by a small thread pool (decode and preprocess on the CPU) and
submitted to the same batcher as `kcap.caption`'s jobs, so shard samples and hot-folder
images fill the same batches. At most `window` samples are held at once in the whole worker
(slots + batch size: every decoder row busy and a batch waiting), whatever the shard size.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from shared.core.errors import BadImageError
from shared.core.messages import Job, Result, ShardJob
from shared.shards.refs import Sample
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.task import (
    CAPTION_RETRIES,
    CaptionQueue,
    captioned_result,
    error_result,
    prepare_or_explain,
    submit_prompts,
)

log = logging.getLogger(__name__)


def sample_job(job: ShardJob, sample: Sample) -> Job:
    """The job the hot folder would send for this sample, its bytes held beside it."""
    sha = hashlib.sha256(sample.image).hexdigest()
    sample_id = hashlib.sha256(f"{job.job_id}\0{sample.index}\0{sample.key}".encode()).hexdigest()[:32]
    return Job(
        job_id=sample_id,
        rel_path=sample.member,
        content_sha256=sha,
        size=len(sample.image),
        mtime=0.0,
        image_b64="",
        options=job.options,
        enqueued_at=job.enqueued_at,
        image_stored=True,
    )


@dataclass(frozen=True)
class _Submitted:
    job: Job
    prepared: Prepared
    futures: list[Future[Captioned]]
    received: float


class ShardPipeline:
    """The worker-wide sample window and prepare pool that every shard job shares."""

    def __init__(
        self, engine: Engine, batcher: CaptionQueue, *, worker: str, window: int, prepare_threads: int
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.worker = worker
        self.window = window
        self._permits = threading.BoundedSemaphore(window)
        self._pool = ThreadPoolExecutor(max_workers=prepare_threads, thread_name_prefix="kcap-shard-prepare")

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def results(self, job: ShardJob, samples: Iterable[Sample]) -> Iterator[tuple[Sample, Result]]:
        """Each sample with its result, in shard order. A sample's permit is released once the
        caller has taken its result (filed it) and asked for the next."""
        pending: deque[tuple[Sample, Job, Future[Result | _Submitted]]] = deque()
        try:
            for sample in samples:
                # Wait for a permit only with nothing of ours in flight: otherwise finish our
                # oldest first, so that two shard jobs can never hold each other's permits.
                while not self._permits.acquire(blocking=not pending):
                    yield self._next(pending)
                one = sample_job(job, sample)
                pending.append((sample, one, self._pool.submit(self._prepare, one, sample)))
            while pending:
                yield self._next(pending)
        finally:
            for _sample, _job, future in pending:  # the caller stopped early (an exception)
                future.cancel()
                self._permits.release()

    def _next(self, pending: deque[tuple[Sample, Job, Future[Result | _Submitted]]]) -> tuple[Sample, Result]:
        sample, one, future = pending.popleft()
        try:
            return sample, self._finish(sample, one, future)
        finally:
            self._permits.release()

    def _prepare(self, one: Job, sample: Sample) -> Result | _Submitted:
        """In a pool thread: decode, preprocess and submit; or the sample's error result."""
        received = time.time()
        if sample.error:
            return error_result(one, BadImageError(sample.error), worker=self.worker, error_class="BadSample")
        prepared = prepare_or_explain(one, self.engine, worker=self.worker, image_bytes=sample.image)
        if isinstance(prepared, Result):
            return prepared
        return _Submitted(one, prepared, submit_prompts(one, prepared, self.batcher), received)

    def _finish(self, sample: Sample, one: Job, future: Future[Result | _Submitted]) -> Result:
        """The sample's result; a failed batch is tried again, then the sample is an error."""
        try:
            submitted = future.result()
        except Exception as exc:
            log.exception("sample %s (%s): preparing failed", sample.key, sample.member)
            return error_result(one, exc, worker=self.worker)
        if isinstance(submitted, Result):
            return submitted
        futures = submitted.futures
        for attempt in range(1, CAPTION_RETRIES + 2):
            try:
                done = [f.result() for f in futures]
            except Exception as exc:
                if attempt > CAPTION_RETRIES:
                    log.error("sample %s: giving up after %d attempts: %r", sample.key, attempt, exc)
                    return error_result(submitted.job, exc, worker=self.worker)
                log.warning("sample %s: attempt %d failed (%r); retrying", sample.key, attempt, exc)
                futures = submit_prompts(submitted.job, submitted.prepared, self.batcher)
                continue
            return captioned_result(
                submitted.job,
                self.engine,
                submitted.prepared,
                done,
                worker=self.worker,
                received=submitted.received,
            )
        raise AssertionError("unreachable")
