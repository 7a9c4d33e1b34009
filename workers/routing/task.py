"""`kcap.route`: file one result. The logic is route_result, a plain function; the Celery
task around it only decodes the message and turns an I/O error into a delayed retry."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery, Task

from shared.core.celery_app import ROUTE_TASK
from shared.core.errors import DecodeError, UnsafePathError
from shared.core.inflight import InFlight
from shared.core.messages import Result
from shared.core.metrics import observe_routed
from shared.core.outcomes import Outcome
from shared.core.settings import Settings
from workers.routing.router import Routed, Router

log = logging.getLogger(__name__)

REJECTED = "rejected"


def route_result(result: Result, router: Router, inflight: InFlight) -> Routed:
    """Place the result's files, then count the outcome and free the producer's claim.

    Raises UnsafePathError (the claim is freed: the message can never be placed) and
    OSError (the destination failed; the caller retries, the input stays untouched).
    """
    try:
        routed = router.route(result)
    except UnsafePathError:
        inflight.discard(result.job_id)
        raise
    free_claim(inflight, result.job_id, routed.outcome if routed.newly_placed else None)
    observe_routed(
        routed.outcome, score=result.score, enqueued_at=result.enqueued_at, newly_placed=routed.newly_placed
    )
    log.info(
        "job %s: %s -> %s%s",
        result.job_id,
        result.rel_path,
        routed.outcome or "nothing placed",
        "" if routed.newly_placed else f" ({routed.note})",
    )
    return routed


def free_claim(
    inflight: InFlight, job_id: str, outcome: Outcome | None, *, patience_s: float = 120.0
) -> None:
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


def retry_delay_s(attempt: int, *, visibility_timeout_s: int) -> int:
    """Back-off for a failed write. A delayed retry waits unacknowledged in the worker; it must
    come due well within the visibility timeout, or Redis would hand it out a second time."""
    return max(1, min(2 ** min(attempt, 8), visibility_timeout_s // 2))


def register_route_task(app: Celery, settings: Settings) -> Task:
    router = Router(settings)
    inflight = InFlight.connect(settings)

    @app.task(name=ROUTE_TASK, bind=True, max_retries=None)
    def route(self: Task, result_data: dict[str, Any]) -> str:
        try:
            result = Result.from_dict(result_data)
        except DecodeError as exc:
            log.error("dropping a route message that is not a result: %s (payload %.200r)", exc, exc.payload)
            return REJECTED
        try:
            routed = route_result(result, router, inflight)
        except UnsafePathError as exc:
            log.error("job %s: refused path %r: %s", result.job_id, result.rel_path, exc)
            return REJECTED
        except OSError as exc:
            attempt = self.request.retries + 1
            delay = retry_delay_s(attempt, visibility_timeout_s=settings.visibility_timeout_s)
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
        return routed.outcome.value if routed.outcome else "skipped"

    return route
