"""The two Celery tasks: `kcap.caption` (GPU side) and `kcap.route` (storage side).

Tasks are registered on an app built from settings, so one process can hold either side.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

import redis
from celery import Celery, Task

from shared.celery_app import CAPTION_TASK, ROUTE_TASK
from shared.errors import BadImageError, DecodeError, UnsafePathError
from shared.inflight import InFlight
from shared.messages import CaptionOptions, Job, Result
from shared.metrics import observe_routed
from shared.settings import Settings
from workers.batcher import Batcher
from workers.engine import Captioned, Engine, Prepared
from workers.route import Router

log = logging.getLogger(__name__)

CAPTION_RETRIES = 3


def error_result(job: Job, exc: BaseException, *, worker: str) -> Result:
    return Result(
        job_id=job.job_id,
        rel_path=job.rel_path,
        content_sha256=job.content_sha256,
        ok=False,
        error_reason=str(exc) or type(exc).__name__,
        error_class=type(exc).__name__,
        worker=worker,
        enqueued_at=job.enqueued_at,
    )


def register_caption_task(
    app: Celery, engine: Engine, batcher: Batcher[CaptionOptions, Prepared, Captioned], *, worker: str
) -> Task:
    """`kcap.caption`: decode, wait for the batch, send the result to the job's route queue."""

    @app.task(name=CAPTION_TASK, bind=True, max_retries=CAPTION_RETRIES)
    def caption(self: Task, job_data: dict[str, Any], reply_queue: str) -> None:
        try:
            job = Job.from_dict(job_data)
        except DecodeError as exc:
            log.error("dropping a caption message that is not a job: %s (payload %.200r)", exc, exc.payload)
            return
        received = time.time()
        try:
            prepared = engine.prepare(job)
        except (BadImageError, DecodeError) as exc:
            log.warning("job %s (%s): unreadable image: %s", job.job_id, job.rel_path, exc)
            _send(app, error_result(job, exc, worker=worker), reply_queue)
            return
        except Exception as exc:
            # Preprocessing failed on an image that decoded: it still gets an outcome.
            log.exception("job %s (%s): preprocessing failed", job.job_id, job.rel_path)
            _send(app, error_result(job, exc, worker=worker), reply_queue)
            return
        # One batch item per prompt; the same preprocessed pixels serve them all.
        futures: list[Future[Captioned]] = [batcher.submit(options, prepared) for options in job.options()]
        try:
            done = [future.result() for future in futures]
        except Exception as exc:
            attempt = self.request.retries + 1
            if attempt > CAPTION_RETRIES:
                log.error("job %s: giving up after %d attempts: %r", job.job_id, attempt, exc)
                _send(app, error_result(job, exc, worker=worker), reply_queue)
                return
            log.warning("job %s: attempt %d failed (%r); retrying", job.job_id, attempt, exc)
            raise self.retry(exc=exc, countdown=2**attempt) from exc
        best = _best(done)
        chosen = done[best]
        result = Result(
            job_id=job.job_id,
            rel_path=job.rel_path,
            content_sha256=job.content_sha256,
            ok=True,
            caption=chosen.text,
            entities=[asdict(e) for e in chosen.entities],
            score=chosen.score,
            clipscore=chosen.clipscore,
            chunks=chosen.chunks,
            caption_model=engine.captioner.source,
            clip_model=engine.scorer_source if chosen.score is not None else "",
            prompt=job.prompts[best],
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
                    "prompt": prompt,
                    "caption": d.text,
                    "entities": [asdict(e) for e in d.entities],
                    "clip_score": d.score,
                    "clipscore": d.clipscore,
                    "truncated": d.truncated,
                }
                for prompt, d in zip(job.prompts, done, strict=True)
            ]
            if len(done) > 1
            else [],
            truncated=chosen.truncated,
            enqueued_at=job.enqueued_at,
        )
        _send(app, result, reply_queue)

    return caption


def _best(done: list[Captioned]) -> int:
    """The caption with the highest score routes the image; unscored: the first prompt's."""
    scored = [(d.score, -i) for i, d in enumerate(done) if d.score is not None]
    return -max(scored)[1] if scored else 0


def _send(app: Celery, result: Result, reply_queue: str) -> None:
    app.send_task(ROUTE_TASK, args=[result.to_dict()], queue=reply_queue)


def register_route_task(app: Celery, settings: Settings) -> Task:
    """`kcap.route`: place the image and its sidecars; retried with back-off on I/O errors."""
    router = Router(settings)
    inflight = InFlight.connect(settings)

    @app.task(name=ROUTE_TASK, bind=True, max_retries=None)
    def route(self: Task, result_data: dict[str, Any]) -> str:
        try:
            result = Result.from_dict(result_data)
        except DecodeError as exc:
            log.error("dropping a route message that is not a result: %s (payload %.200r)", exc, exc.payload)
            return "rejected"
        try:
            routed = router.route(result)
        except UnsafePathError as exc:
            log.error("job %s: refused path %r: %s", result.job_id, result.rel_path, exc)
            inflight.discard(result.job_id)
            return "rejected"
        except OSError as exc:
            attempt = self.request.retries + 1
            # A delayed retry waits unacknowledged in the worker; it must come due well
            # within the visibility timeout, or Redis would hand it out a second time.
            delay = max(1, min(2 ** min(attempt, 8), settings.visibility_timeout_s // 2))
            log.error(
                "job %s: cannot write its files (%s: %s); attempt %d, retrying in %ds; "
                "the input stays untouched",
                result.job_id,
                type(exc).__name__,
                exc,
                attempt,
                delay,
            )
            raise self.retry(exc=exc, countdown=delay) from exc
        _free_claim(inflight, result.job_id, routed.outcome if routed.newly_placed else None)
        observe_routed(
            routed.outcome,
            score=result.score,
            enqueued_at=result.enqueued_at,
            newly_placed=routed.newly_placed,
        )
        log.info(
            "job %s: %s -> %s%s",
            result.job_id,
            result.rel_path,
            routed.outcome,
            "" if routed.newly_placed else f" ({routed.note})",
        )
        return routed.outcome

    return route


def _free_claim(inflight: InFlight, job_id: str, outcome: str | None, *, patience_s: float = 120.0) -> None:
    """Count the outcome and free the producer's claim, waiting out a Redis restart.

    The files are already placed, so this is retried here rather than by re-publishing the
    task (a re-publish needs the same Redis). If Redis stays away, the claim stays too and
    the producer's stale-claim check frees it later; nothing is lost either way.
    """
    deadline = time.monotonic() + patience_s
    attempt = 0
    while True:
        attempt += 1
        try:
            if outcome is not None:
                inflight.record_outcome(job_id, outcome)
            else:
                inflight.discard(job_id)
            return
        except redis.exceptions.RedisError as exc:
            if time.monotonic() >= deadline:
                log.error(
                    "job %s: placed, but could not free its claim after %d attempts: %s", job_id, attempt, exc
                )
                return
            log.warning(
                "job %s: placed, but Redis is unreachable (%s); attempt %d, retrying", job_id, exc, attempt
            )
            time.sleep(min(2.0, 0.2 * attempt))
