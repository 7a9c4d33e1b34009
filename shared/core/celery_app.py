"""The Celery app both sides use: JSON only, late acks, named queues, task events on.

Nothing here runs at import: an app is built from Settings by whoever needs one (the worker
processes, the producer). Flower's `celery -A` imports shared.core.flower_app instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue

from shared.core.logs import console_is_quiet
from shared.core.settings import Settings

CAPTION_TASK = "kcap.caption"
ROUTE_TASK = "kcap.route"
# Many results in one message: the caption worker sends what one batch finished together, so
# the route worker pays Celery's per-message cost once per batch rather than once per image.
ROUTE_BATCH_TASK = "kcap.route_batch"
# Dataset mode: one shard (or chunk) per message, captioned and filed by the caption worker.
SHARD_TASK = "kcap.caption_shard"


def make_app(settings: Settings) -> Celery:
    """A Celery app for these settings. No task is registered here: workers add theirs."""
    app = Celery("kcap", broker=settings.require_broker(), set_as_current=False)
    app.conf.update(_config(settings))
    return app


def _config(settings: Settings) -> dict[str, Any]:
    return {
        # JSON only: a pickle message is refused by the worker, never executed.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # No result backend: results travel as route messages, not as Celery results.
        "task_ignore_result": True,
        # Late acks: a job is acknowledged only after its result is handed on, so a worker
        # killed mid-batch loses nothing; Redis redelivers after the visibility timeout.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # The thread pool cannot cancel a running task. After a lost connection a running job
        # finishes, its ack is lost with the old channel, and Redis redelivers it after the
        # visibility timeout; the route task's idempotence makes that harmless.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu scans for expired unacked messages every interval x throttle seconds
            # (100 s by default); scan often enough that a killed worker's jobs come back
            # soon after the visibility timeout, not minutes later.
            "unacked_restore_interval": restore_interval_s(settings),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        # Publishing waits out a Redis restart (about 20 s) instead of failing the job.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 20,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        # Events let Flower show every task and worker live.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "task_queues": [
            Queue(settings.caption_queue),
            Queue(settings.route_queue),
            Queue(settings.shard_queue),
        ],
        "task_default_queue": settings.caption_queue,
        "task_routes": {
            CAPTION_TASK: {"queue": settings.caption_queue},
            ROUTE_TASK: {"queue": settings.route_queue},
            ROUTE_BATCH_TASK: {"queue": settings.route_queue},
            SHARD_TASK: {"queue": settings.shard_queue},
        },
        "task_create_missing_queues": True,
    }


def restore_interval_s(settings: Settings) -> int:
    return max(1, min(10, settings.visibility_timeout_s // 4))


def worker_argv(queue: str, *, concurrency: int, name: str) -> list[str]:
    """`worker_main` arguments for a Celery worker on a queue (or several, comma-separated): a
    thread pool (the models are loaded once, in this process), task events on for Flower, no
    mingle/gossip chatter."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    # Under `kcap up`/`kcap run` the console shows warnings only: no start-up banner either.
    quiet = ["--quiet"] if console_is_quiet() else []
    return [
        *quiet,
        "worker",
        "-Q",
        queue,
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-n",
        name,
        "-E",
        "--without-mingle",
        "--without-gossip",
        "-l",
        level,
    ]
