"""Entry points of the worker processes: one caption worker (one GPU) and the route worker."""

from __future__ import annotations

import logging

from shared.celery_app import make_app
from shared.metrics import timed_batches
from shared.settings import Settings
from workers.tasks import register_route_task

log = logging.getLogger(__name__)


def run_caption_worker(settings: Settings, *, name: str) -> None:
    """Load the models in this process (never before a fork), then consume the caption queue.

    The thread pool holds two batches' worth of jobs: one batch runs on the device while the
    pool threads decode and preprocess the next (the overlap); prefetch stays bounded.
    """
    from workers.batcher import Batcher
    from workers.engine import Engine
    from workers.tasks import register_caption_task

    engine = Engine.load(settings, eager_scorer=settings.score_enabled)
    batcher = Batcher(
        timed_batches(engine.run_batch),
        max_size=settings.batch_size,
        max_wait_s=settings.batch_wait_ms / 1000,
    ).start()
    app = make_app(settings)
    register_caption_task(app, engine, batcher, worker=name)
    concurrency = 2 * settings.batch_size
    try:
        app.worker_main(_worker_argv(settings.caption_queue, concurrency=concurrency, name=name))
    finally:
        batcher.stop()


def run_route_worker(settings: Settings, *, name: str, concurrency: int = 4) -> None:
    """Consume the route queue on the storage host."""
    app = make_app(settings)
    register_route_task(app, settings)
    app.worker_main(_worker_argv(settings.route_queue, concurrency=concurrency, name=name))


def _worker_argv(queue: str, *, concurrency: int, name: str) -> list[str]:
    """A Celery worker on one queue: a thread pool (the models are loaded once, in this
    process), task events on for Flower, and no mingle/gossip chatter between workers."""
    return [
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
        _level(),
    ]


def _level() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())
