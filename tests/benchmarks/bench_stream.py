"""Images arriving over time, as Celery's pool threads hand them to the device: kcap's static
decoder fed per batch (the Batcher) against streamed (the DecodeStream), in one process.

Each pool thread takes the next image, submits it and blocks until its caption is back, then
takes the next, as a Celery pool thread does with its jobs; the pool has as many threads as
the worker gives it (shared.core's defaults: batch 16, 32 slots; workers/captioning/worker.py
`pool_threads`). So images arrive while others decode, and a device path that hands
captions back sooner gets the next images sooner. Reported: images/s and process CPU ms per
image, with ratios against the first row (per batch at the default settings). Every
caption is compared with transformers' generate's; a mismatch is counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.core.messages import CaptionOptions
from shared.core.settings import Settings
from tests.benchmarks import harness
from workers.captioning.batcher import Batcher
from workers.captioning.decode_stream import DecodeStream
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.worker import pool_threads


@dataclass(frozen=True)
class PoolRow:
    path: str
    batch: int
    slots: int
    pool: int
    images: int
    wall_s: float
    cpu_s: float
    occupancy: float
    mismatches: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_s / self.images


def drive(queue: Any, options: CaptionOptions, items: list[Prepared], *, pool: int) -> list[Captioned]:
    """`pool` threads, each submitting its next image once its last one is captioned."""
    results: list[Captioned | None] = [None] * len(items)
    order = iter(range(len(items)))
    lock = threading.Lock()

    def pool_thread() -> None:
        while True:
            with lock:
                index = next(order, None)
            if index is None:
                return
            results[index] = queue.submit(options, items[index]).result()

    threads = [threading.Thread(target=pool_thread) for _ in range(pool)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def _plain(caption: Any) -> tuple[object, ...]:
    entities = [(e.phrase, e.start, e.end, e.boxes) for e in caption.entities]
    return caption.text, entities, caption.truncated


def run_pool_rows(
    model_dir: Path,
    pixels: list[torch.Tensor],
    *,
    prompt: str,
    new_tokens: int,
    expected: list[Any],
) -> list[PoolRow]:
    """Per batch at the defaults, per batch at the streaming default's slot count, and
    streamed at the defaults (batch 16, 32 slots). `expected`: generate's captions."""
    defaults = Settings()
    items = [
        Prepared(job_id=f"j{i}", caption_pixels=p, clip_pixels=None, width=64, height=48, decode_s=0.0)
        for i, p in enumerate(pixels)
    ]
    options = CaptionOptions(prompts=(prompt,), max_new_tokens=new_tokens)
    wait_s = defaults.batch_wait_ms / 1000
    plans = [
        # (path, batch size, slots): per batch, the slots were capped by the batch size.
        ("per batch (Batcher), default", defaults.batch_size, defaults.batch_size),
        ("per batch (Batcher), slots = batch", defaults.decoder_slots, defaults.decoder_slots),
        ("streamed (DecodeStream), default", defaults.batch_size, defaults.decoder_slots),
    ]
    expected_plain = [_plain(c) for c in expected]
    rows = []
    for path, batch, slots in plans:
        settings = Settings(
            caption_model=str(model_dir), dtype="float32", batch_size=batch, decoder_slots=slots
        )
        engine = Engine.load(settings, eager_scorer=False)
        streaming = path.startswith("streamed")
        decoder = engine.static_decoder()
        counted = [0, 0]  # slot steps, busy slot steps: per batch, each call restarts the stats

        def run_batch(
            key: CaptionOptions,
            batch_items: list[Prepared],
            engine: Engine = engine,
            counted: list[int] = counted,
        ) -> list[Captioned]:
            results = engine.run_batch(key, batch_items)
            stats = engine.static_decoder().stats
            counted[0] += stats.slot_steps
            counted[1] += stats.busy_slot_steps
            return results

        queue: Any
        if streaming:
            queue = DecodeStream(engine, max_size=batch, max_wait_s=wait_s).start()
        else:
            queue = Batcher(run_batch, max_size=batch, max_wait_s=wait_s).start()
        pool = pool_threads(settings, streaming=streaming)
        try:
            drive(queue, options, items[: 2 * batch], pool=pool)  # warm-up, not timed
            counted[:] = [-decoder.stats.slot_steps, -decoder.stats.busy_slot_steps] if streaming else [0, 0]
            cpu_started, started = time.process_time(), time.perf_counter()
            got = drive(queue, options, items, pool=pool)
            wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        finally:
            queue.stop()
        if streaming:
            counted[0] += decoder.stats.slot_steps
            counted[1] += decoder.stats.busy_slot_steps
        slot_steps, busy = counted
        rows.append(
            PoolRow(
                path=path,
                batch=batch,
                slots=slots,
                pool=pool,
                images=len(items),
                wall_s=wall_s,
                cpu_s=cpu_s,
                occupancy=busy / slot_steps if slot_steps else 0.0,
                mismatches=sum(1 for a, b in zip(expected_plain, got, strict=True) if a != _plain(b)),
            )
        )
    return rows


def render_pool(rows: list[PoolRow], *, model: str) -> str:
    base = rows[0]
    table = [
        [
            model,
            row.path,
            row.batch,
            row.slots,
            row.pool,
            f"{row.images_per_s:.1f}",
            f"{row.images_per_s / base.images_per_s:.2f}x",
            f"{row.cpu_ms_per_image:.1f}",
            f"{row.cpu_ms_per_image / base.cpu_ms_per_image:.2f}x",
            f"{row.occupancy:.2f}",
            row.mismatches,
        ]
        for row in rows
    ]
    headers = [
        "model",
        "images arriving from the pool",
        "batch",
        "slots",
        "pool threads",
        "images/s",
        "vs first",
        "CPU ms/image",
        "vs first",
        "slot occupancy",
        "caption mismatches",
    ]
    return harness.markdown_table(headers, table)


def run_pool_workload(workdir: Path, *, images: int, new_tokens: int, threads: int) -> tuple[str, int]:
    """The deep grounded model (overhead-bound, captions of varied length), its generate
    reference at batch 64, then the rows above; a markdown table and the mismatch count."""
    from shared.core.prompts import PRESETS
    from workers.captioning.families.kosmos2.captioner import Captioner
    from workers.tiny.images import tiny_images
    from workers.tiny.kosmos2 import build_kosmos2

    harness.set_threads(threads)
    model_dir = build_kosmos2(workdir / "kosmos2-deep-pool", preset="deep", captions="grounded")
    captioner = Captioner(str(model_dir), device=torch.device("cpu"), dtype=torch.float32)
    pixels = [captioner.preprocess(image) for image in tiny_images(images, seed=11)]
    prompt = PRESETS["detailed"]
    expected = []
    for start in range(0, len(pixels), 64):
        ids = captioner.forward(pixels[start : start + 64], prompt=prompt, max_new_tokens=new_tokens)
        expected += captioner.postprocess(ids, max_new_tokens=new_tokens)
    rows = run_pool_rows(model_dir, pixels, prompt=prompt, new_tokens=new_tokens, expected=expected)
    return render_pool(rows, model="deep (grounded)"), sum(row.mismatches for row in rows)
