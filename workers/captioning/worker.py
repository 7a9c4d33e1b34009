"""One caption worker process (one GPU, or the CPU): models, batcher, Celery consumer."""

from __future__ import annotations

from shared.core.attempts import Attempts
from shared.core.blobs import Blobs
from shared.core.celery_app import make_app, worker_argv
from shared.core.message_guard import caption_message_limit, guard_worker
from shared.core.metrics import timed_batches
from shared.core.publisher import CeleryPublisher
from shared.core.settings import Settings
from workers.captioning.batcher import Batcher
from workers.captioning.engine import Engine
from workers.captioning.result_sender import ResultSender
from workers.captioning.task import register_caption_task


def run_caption_worker(settings: Settings, *, name: str) -> None:
    """Load the models in this process (never before a fork), then consume the caption queue.

    The thread pool holds two batches' worth of jobs: one batch runs on the device while the
    pool threads decode and preprocess the next (the overlap); prefetch stays bounded.
    """
    engine = Engine.load(settings, eager_scorer=settings.score_enabled)
    batcher = Batcher(
        timed_batches(engine.run_batch),
        max_size=settings.batch_size,
        max_wait_s=settings.batch_wait_ms / 1000,
    ).start()
    client, _ = guard_worker(settings, worker=name)
    app = make_app(settings)
    publisher = CeleryPublisher(app, caption_queue=settings.caption_queue, route_queue=settings.route_queue)
    sender = ResultSender(publisher, max_results=settings.batch_size).start()
    register_caption_task(
        app,
        engine,
        batcher,
        sender,
        worker=name,
        attempts=Attempts(client, settings.keys, settings.caption_queue),
        max_worker_deaths=settings.max_worker_deaths,
        max_message_bytes=caption_message_limit(settings.max_file_bytes),
        blobs=Blobs.connect(settings),
    )
    try:
        app.worker_main(worker_argv(settings.caption_queue, concurrency=2 * settings.batch_size, name=name))
    finally:
        batcher.stop()
        sender.stop()
