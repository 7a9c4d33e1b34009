"""One caption worker process (one GPU, or the CPU): models, batcher, Celery consumer."""

from __future__ import annotations

from shared.core.attempts import Attempts
from shared.core.blobs import Blobs
from shared.core.celery_app import make_app, worker_argv
from shared.core.message_guard import caption_message_limit, guard_worker
from shared.core.messages import CaptionOptions
from shared.core.metrics import timed_batches
from shared.core.publisher import CeleryPublisher
from shared.core.settings import Settings
from shared.core.shard_board import ShardBoard
from workers.captioning.batcher import Batcher
from workers.captioning.decode_stream import DecodeStream
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.result_sender import ResultSender
from workers.captioning.shard_samples import ShardPipeline
from workers.captioning.shard_task import ShardWorker, register_shard_task
from workers.captioning.shard_turns import ShardTap
from workers.captioning.task import register_caption_task

# Threads that decode and preprocess shard samples: the pool threads hold hot-folder jobs,
# a shard job's samples are prepared here (then wait in the batcher like any job).
PREPARE_THREADS = 4


def run_caption_worker(settings: Settings, *, name: str) -> None:
    """Load the models in this process (never before a fork), then consume the caption queue
    and the shard queue."""
    engine = Engine.load(settings, eager_scorer=settings.score_enabled)
    streaming = engine.can_stream
    batcher: Batcher[CaptionOptions, Prepared, Captioned] | DecodeStream
    if streaming:
        batcher = DecodeStream(
            engine,
            max_size=settings.batch_size,
            max_wait_s=settings.batch_wait_ms / 1000,
            run_batch=timed_batches(engine.run_batch),
            # Streamed, a "batch" in the metrics is the rows that ended at one step, and its
            # seconds are their postprocessing and scoring (decoding overlaps other rows').
            finish_rows=timed_batches(engine.finish_streamed),
        ).start()
    else:
        batcher = Batcher(
            timed_batches(engine.run_batch),
            max_size=settings.batch_size,
            max_wait_s=settings.batch_wait_ms / 1000,
        ).start()
    client, _ = guard_worker(settings, worker=name)
    app = make_app(settings)
    publisher = CeleryPublisher(app, caption_queue=settings.caption_queue, route_queue=settings.route_queue)
    sender = ResultSender(publisher, max_results=settings.batch_size).start()
    attempts = Attempts(client, settings.keys, settings.caption_queue)
    pipeline = ShardPipeline(
        engine,
        batcher,
        worker=name,
        window=pool_threads(settings, streaming=streaming),
        prepare_threads=PREPARE_THREADS,
    )
    tap = ShardTap(settings.shard_queue)
    tap.install(app)
    shards = ShardWorker(
        pipeline,
        ShardBoard.connect(settings),
        Attempts(client, settings.keys, settings.shard_queue),
        worker=name,
        max_worker_deaths=settings.max_worker_deaths,
        visibility_timeout_s=settings.visibility_timeout_s,
        tap=tap,
    )
    register_shard_task(app, shards)
    register_caption_task(
        app,
        engine,
        batcher,
        sender,
        worker=name,
        attempts=attempts,
        max_worker_deaths=settings.max_worker_deaths,
        max_message_bytes=caption_message_limit(settings.max_file_bytes),
        blobs=Blobs.connect(settings),
    )
    try:
        concurrency = pool_threads(settings, streaming=streaming)
        queues = f"{settings.caption_queue},{settings.shard_queue}"
        app.worker_main(worker_argv(queues, concurrency=concurrency, name=name))
    finally:
        pipeline.stop()
        batcher.stop()
        sender.stop()


def pool_threads(settings: Settings, *, streaming: bool) -> int:
    """Celery pool threads, each holding one job (and prefetching bounded by them).

    Batches: two batches' worth, so one runs on the device while the pool threads decode
    and preprocess the next (the overlap). Streaming: every slot busy plus a batch's worth
    of images prepared and waiting, so a slot that frees up takes the next image at the
    next step instead of waiting for Celery to fetch and decode one.
    """
    if streaming:
        return settings.decoder_slots + settings.batch_size
    return 2 * settings.batch_size
