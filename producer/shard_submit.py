"""Sending a plan's shard jobs to the shard queue, and waiting until every one is finished."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from producer.shard_plan import Plan
from shared.core.celery_app import SHARD_TASK
from shared.core.shard_board import FINISHED, ShardBoard, ShardEntry, ShardState

log = logging.getLogger(__name__)

_BROKER_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OperationalError, OSError)


def submit(app: Celery, board: ShardBoard, plan: Plan, *, queue: str) -> list[str]:
    """Put the plan on the board (queued) and its jobs on the queue; their ids."""
    board.plan(
        {
            job.job_id: ShardEntry(
                state=ShardState.QUEUED, chunk=job.chunk, expected=plan.expected[job.job_id]
            )
            for job in plan.jobs
        }
    )
    for job in plan.jobs:
        app.send_task(SHARD_TASK, args=[job.to_dict()], queue=queue)
    return [job.job_id for job in plan.jobs]


def wait_finished(
    board: ShardBoard,
    job_ids: list[str],
    *,
    stop: threading.Event,
    on_progress: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> dict[str, ShardEntry]:
    """Wait until every job is done or failed (or stop is set); their last entries."""
    wanted = set(job_ids)
    entries: dict[str, ShardEntry] = {}
    while not stop.is_set():
        try:
            entries = {job_id: e for job_id, e in board.entries().items() if job_id in wanted}
            if len(entries) == len(wanted) and all(e.state in FINISHED for e in entries.values()):
                break
        except _BROKER_ERRORS as exc:
            log.warning("waiting for Redis (%s)", exc)
        if on_progress is not None:
            on_progress()
        stop.wait(poll_s)
    return entries
