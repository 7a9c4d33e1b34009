"""`kcap.route_batch` files the results of one caption batch, `kcap.route` one result (the
producer's refusals, and messages set aside then sent again). The logic is route_result, a
plain function; the tasks around it turn an I/O error into a delayed retry of what failed
(only that: the rest is filed), set a refused path aside, and file as an error a result that
the route worker died on too often. A message that is not a result (or a list of them) never
reaches them: the tasks' GuardedStrategy sets it aside (shared.core.message_guard)."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, Task

from shared.core.attempts import Attempts, Deaths
from shared.core.celery_app import ROUTE_BATCH_TASK, ROUTE_TASK
from shared.core.dead_letters import DeadLetter, DeadLetters
from shared.core.errors import DecodeError, UnsafePathError
from shared.core.inflight import InFlight
from shared.core.message_guard import ROUTE_MESSAGE_LIMIT_BYTES, GuardedStrategy
from shared.core.messages import Result
from shared.core.metrics import observe_routed
from shared.core.outcomes import Outcome
from shared.core.settings import Settings
from workers.routing.router import InputNotSettled, Routed, Router
from workers.routing.turns import FilingTurns

log = logging.getLogger(__name__)

# How many results one route worker files at once (their fsyncs overlap on network storage).
ROUTE_THREADS = 16


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


def check_route_arguments(args: list[Any], kwargs: dict[str, Any]) -> None:
    """A route message's one argument is a result (GuardedStrategy's check)."""
    try:
        Result.from_dict(args[0])
    except DecodeError as exc:
        raise DecodeError(f"not a result: {exc}", payload=exc.payload) from exc


def check_route_batch_arguments(args: list[Any], kwargs: dict[str, Any]) -> None:
    """A route-batch message's one argument is a non-empty list of results."""
    results = args[0]
    if not isinstance(results, list) or not results:
        raise ValueError("a route batch is a non-empty list of results")
    for index, data in enumerate(results):
        try:
            Result.from_dict(data)
        except DecodeError as exc:
            raise DecodeError(f"item {index} is not a result: {exc}", payload=exc.payload) from exc


def once_each(results_data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch's results, each job once (its first result): a job delivered twice to the
    caption side can come back twice in one batch, and filed side by side the two would race."""
    first: dict[str, dict[str, Any]] = {}
    for data in results_data:
        if first.setdefault(str(data["job_id"]), data) is not data:
            log.info("job %s: in this batch more than once; filing its first result", data["job_id"])
    return list(first.values())


def as_error(result: Result, deaths: int) -> Result:
    """A result the route worker died on `deaths` times, as an error: the input still lands
    in errors, with a record saying why, and nothing of the result is written. It keeps its
    caption, by which the router knows a caption file left by a filing it died in."""
    reason = f"route worker died {deaths} time{'' if deaths == 1 else 's'} on this result"
    log.error("job %s (%s): %s; filing it as an error", result.job_id, result.rel_path, reason)
    return Result(
        job_id=result.job_id,
        rel_path=result.rel_path,
        content_sha256=result.content_sha256,
        ok=False,
        caption=result.caption,
        error_reason=reason,
        error_class="WorkerDied",
        worker=result.worker,
        enqueued_at=result.enqueued_at,
    )


@dataclass(frozen=True)
class Later:
    """A result to route again, after delay_s."""

    data: dict[str, Any]
    delay_s: float


def register_route_task(
    app: Celery, settings: Settings, *, dead_letters: DeadLetters, attempts: Attempts, worker: str
) -> tuple[Task, Task]:
    """The route task for one result, and the one for a caption batch's results (the usual)."""
    router = Router(settings)
    inflight = InFlight.connect(settings)
    # A batch's results are filed side by side, as many at once as the route threads of
    # one-result messages would be: on network storage their fsyncs overlap.
    filing = ThreadPoolExecutor(ROUTE_THREADS, thread_name_prefix="kcap-file")
    turns = FilingTurns(attempts)

    def file_one(result_data: dict[str, Any], request: Any) -> Later | None:
        """Route one result; what to route again later, or None when it is done with."""
        result = Result.from_dict(result_data)  # GuardedStrategy let through only results
        # The attempt is recorded once this result's turn comes (a suspect waits to be filed
        # alone), and ends with the block whichever way it ends: not a death.
        with turns.filing(result.job_id) as deaths:
            return file_in_turn(result, result_data, request, deaths)

    def file_in_turn(
        result: Result, result_data: dict[str, Any], request: Any, deaths: Deaths
    ) -> Later | None:
        try:
            if deaths.total:
                router.remove_cut_short(result)  # what the writes the worker died in left
            if deaths.alone >= settings.max_worker_deaths:
                result = as_error(result, deaths.alone)
            route_result(result, router, inflight)
        except UnsafePathError as exc:
            log.error("job %s: refused path %r: %s", result.job_id, result.rel_path, exc)
            dead_letters.add(
                DeadLetter.of(
                    json.dumps([[result_data], {}, {}]),  # set aside as a one-result message
                    queue=str((request.delivery_info or {}).get("routing_key") or settings.route_queue),
                    reason=f"refused path {result.rel_path!r}: {exc}",
                    task=ROUTE_TASK,
                    id=request.id,
                    worker=worker,
                )
            )
        except InputNotSettled as exc:
            log.info("%s; routing it again in %.1fs", exc, exc.wait_s)
            return Later(result_data, max(0.1, exc.wait_s))
        except OSError as exc:
            delay = retry_delay_s(request.retries + 1, visibility_timeout_s=settings.visibility_timeout_s)
            log.error(
                "job %s: cannot write its files (%s: %s); attempt %d, retrying in %ds; "
                "the input stays untouched",
                result.job_id,
                type(exc).__name__,
                exc,
                request.retries + 1,
                delay,
            )
            return Later(result_data, delay)
        return None

    def route_again(task: Task, later: list[Later], *, as_batch: bool) -> None:
        """Re-publish only what must be routed again (the rest is filed), once the soonest is due."""
        if not later:
            return
        data = [item.data for item in later]
        args = [data] if as_batch else data
        countdown = min(item.delay_s for item in later)
        raise task.retry(args=args, countdown=countdown)

    single = GuardedStrategy(max_bytes=ROUTE_MESSAGE_LIMIT_BYTES, check=check_route_arguments)
    batch = GuardedStrategy(max_bytes=ROUTE_MESSAGE_LIMIT_BYTES, check=check_route_batch_arguments)

    @app.task(name=ROUTE_TASK, bind=True, max_retries=None, Strategy=single)
    def route(self: Task, result_data: dict[str, Any]) -> None:
        later = file_one(result_data, self.request)
        route_again(self, [later] if later else [], as_batch=False)

    @app.task(name=ROUTE_BATCH_TASK, bind=True, max_retries=None, Strategy=batch)
    def route_batch(self: Task, results_data: list[dict[str, Any]]) -> None:
        request = self.request
        filed = list(filing.map(lambda data: file_one(data, request), once_each(results_data)))
        route_again(self, [later for later in filed if later is not None], as_batch=True)

    return route, route_batch
