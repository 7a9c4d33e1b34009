"""`kcap.caption`: decode, wait for the batch, send the result to the job's route queue
(with the other results that finished with it, in one message: workers/captioning/result_sender).

The logic is caption_job, a plain function over an Engine and a Batcher; the Celery task
around it counts the job's starts (a job its worker died on too often goes to errors
unread), sends the result and retries a failed batch. A message that is not a job never
reaches it: the task's GuardedStrategy sets it aside (shared.core.message_guard).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any, Protocol

from celery import Celery, Task

from shared.core.attempts import Attempts
from shared.core.blobs import Blobs
from shared.core.celery_app import CAPTION_TASK
from shared.core.errors import BadImageError, DecodeError, WorkerDiedError
from shared.core.message_guard import GuardedStrategy
from shared.core.messages import CaptionOptions, Job, Result
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.result_sender import ResultSender

log = logging.getLogger(__name__)

CAPTION_RETRIES = 3


class CaptionQueue(Protocol):
    """Where a pool thread hands its prepared image and waits for the caption: the Batcher
    (whole batches), or the DecodeStream (kcap's static decoder, continuous batching)."""

    def submit(self, key: CaptionOptions, item: Prepared) -> Future[Captioned]: ...


def error_result(job: Job, exc: BaseException, *, worker: str, error_class: str | None = None) -> Result:
    return Result(
        job_id=job.job_id,
        rel_path=job.rel_path,
        content_sha256=job.content_sha256,
        ok=False,
        error_reason=str(exc) or type(exc).__name__,
        error_class=error_class or type(exc).__name__,
        worker=worker,
        enqueued_at=job.enqueued_at,
    )


def died_result(job: Job, deaths: int, *, worker: str) -> Result:
    """The outcome of a job its worker died on `deaths` times: errors, with that reason."""
    reason = f"worker died {deaths} time{'' if deaths == 1 else 's'} on this input"
    log.error("job %s (%s): %s; sending it to errors without decoding it", job.job_id, job.rel_path, reason)
    return error_result(job, WorkerDiedError(reason), worker=worker, error_class="WorkerDied")


def check_caption_arguments(args: list[Any], kwargs: dict[str, Any]) -> None:
    """A caption message's arguments are a job and a reply queue (GuardedStrategy's check)."""
    job_data, reply_queue = args
    try:
        Job.from_dict(job_data)
    except DecodeError as exc:
        raise DecodeError(f"not a job: {exc}", payload=exc.payload) from exc
    if not isinstance(reply_queue, str) or not reply_queue:
        raise ValueError("the reply queue must be a queue name")


def prepare_or_explain(
    job: Job, engine: Engine, *, worker: str, image_bytes: bytes | None = None
) -> Prepared | Result:
    """The decoded, preprocessed image, or an error result saying why it cannot be."""
    try:
        return engine.prepare(job, image_bytes)
    except (BadImageError, DecodeError) as exc:
        log.warning("job %s (%s): unreadable image: %s", job.job_id, job.rel_path, exc)
        return error_result(job, exc, worker=worker)
    except Exception as exc:
        # Preprocessing failed on an image that decoded: it still gets an outcome.
        log.exception("job %s (%s): preprocessing failed", job.job_id, job.rel_path)
        return error_result(job, exc, worker=worker)


def caption_job(
    job: Job,
    engine: Engine,
    batcher: CaptionQueue,
    *,
    worker: str,
    received: float | None = None,
    image_bytes: bytes | None = None,
) -> Result:
    """Caption (and score) one job through the batcher: one batch item per prompt, the same
    pixels for all. Raises what a failed batch raised; the caller may retry."""
    received = time.time() if received is None else received
    prepared = prepare_or_explain(job, engine, worker=worker, image_bytes=image_bytes)
    if isinstance(prepared, Result):
        return prepared
    futures = submit_prompts(job, prepared, batcher)
    return captioned_result(
        job, engine, prepared, [f.result() for f in futures], worker=worker, received=received
    )


def submit_prompts(job: Job, prepared: Prepared, batcher: CaptionQueue) -> list[Future[Captioned]]:
    """One batch item per prompt, the same pixels for all; their futures in prompt order."""
    return [batcher.submit(job.options.for_prompt(prompt), prepared) for prompt in job.options.prompts]


def captioned_result(
    job: Job, engine: Engine, prepared: Prepared, done: list[Captioned], *, worker: str, received: float
) -> Result:
    """The result of a job whose prompts were all captioned: the best-scored caption routes."""
    options = job.options
    best = best_index(done)
    chosen = done[best]
    return Result(
        job_id=job.job_id,
        rel_path=job.rel_path,
        content_sha256=job.content_sha256,
        ok=True,
        caption=chosen.text,
        entities=[asdict(e) for e in chosen.entities],
        score=chosen.score,
        score_method=chosen.scores.statistic(options.route_score) if chosen.scores is not None else "",
        score_original=chosen.score_original,
        score_sentence_chunks=chosen.score_sentence_chunks,
        clipscore=chosen.clipscore,
        slices=chosen.slices,
        chunks=chosen.chunks,
        caption_model=engine.captioner.source,
        clip_model=engine.scorer_source if chosen.score is not None else "",
        caption_family=engine.captioner.family,
        score_family=chosen.scores.family if chosen.scores is not None else "",
        prompt=engine.captioner.prompt_for(options.prompts[best]),
        width=prepared.width,
        height=prepared.height,
        timings={
            **chosen.timings,
            "queue_s": round(received - job.enqueued_at, 4),
            "worker_s": round(time.time() - received, 4),
        },
        worker=worker,
        captions=[
            {
                "prompt": engine.captioner.prompt_for(prompt),
                "caption": d.text,
                "entities": [asdict(e) for e in d.entities],
                "clip_score": d.score,
                "clip_score_original": d.score_original,
                "clip_score_sentence_chunks": d.score_sentence_chunks,
                "clipscore": d.clipscore,
                "truncated": d.truncated,
            }
            for prompt, d in zip(options.prompts, done, strict=True)
        ]
        if len(done) > 1
        else [],
        truncated=chosen.truncated,
        decoder=chosen.decoder,
        enqueued_at=job.enqueued_at,
    )


def best_index(done: list[Captioned]) -> int:
    """The caption with the highest score routes the image; unscored: the first prompt's."""
    scored = [(d.score, -i) for i, d in enumerate(done) if d.score is not None]
    return -max(scored)[1] if scored else 0


def register_caption_task(
    app: Celery,
    engine: Engine,
    batcher: CaptionQueue,
    sender: ResultSender,
    *,
    worker: str,
    attempts: Attempts,
    max_worker_deaths: int,
    max_message_bytes: int,
    blobs: Blobs | None = None,
) -> Task:
    strategy = GuardedStrategy(max_bytes=max_message_bytes, check=check_caption_arguments)

    @app.task(name=CAPTION_TASK, bind=True, max_retries=CAPTION_RETRIES, Strategy=strategy)
    def caption(self: Task, job_data: dict[str, Any], reply_queue: str) -> None:
        job = Job.from_dict(job_data)  # GuardedStrategy let through only jobs
        # The attempt ends with this block, whichever way: not a death. A death beside the
        # killer counts too: a caption batch dies as one (see shared.core.attempts).
        with attempts.attempt(job.job_id) as earlier:
            if earlier.total >= max_worker_deaths:
                result = died_result(job, earlier.total, worker=worker)
            else:
                image = stored_image(job)
                if job.image_stored and image is None:
                    return  # nothing to caption; see stored_image
                result = caption_or_retry(self, job, image)
            sender.send(result, queue=reply_queue)

    def stored_image(job: Job) -> bytes | None:
        """The bytes of a job whose image is stored beside the message, or None."""
        if not job.image_stored:
            return None
        image = blobs.get(job.job_id) if blobs is not None else None
        if image is None:
            # Routed and deleted already (a second delivery), or expired in a long queue:
            # no result, so no second outcome; a job never routed is sent again, blob and
            # all, by the producer's stale-claim check.
            log.warning(
                "job %s (%s): its image is no longer stored; dropping this delivery",
                job.job_id,
                job.rel_path,
            )
        return image

    def caption_or_retry(task: Task, job: Job, image: bytes | None) -> Result:
        try:
            return caption_job(job, engine, batcher, worker=worker, image_bytes=image)
        except Exception as exc:
            attempt = task.request.retries + 1
            if attempt > CAPTION_RETRIES:
                log.error("job %s: giving up after %d attempts: %r", job.job_id, attempt, exc)
                return error_result(job, exc, worker=worker)
            log.warning("job %s: attempt %d failed (%r); retrying", job.job_id, attempt, exc)
            raise task.retry(exc=exc, countdown=2**attempt) from exc

    return caption
