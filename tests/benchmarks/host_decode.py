"""(r) in process: what preparing one real-size photo costs, the original script's way and
kcap's way, in CPU milliseconds on one thread.

The original script opened the file, converted it to RGB and handed the full-size image to
the Kosmos-2 processor and to the CLIP processor. kcap's worker runs Engine.prepare: the
decode and both preprocessings that feed a batch. Both run here on the same processors (the
real 224 px sizes) with torch on one thread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from shared.core.settings import Settings
from tests.benchmarks import harness


def _cpu_ms(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.thread_time()
    value = work()
    return 1000 * (time.thread_time() - started), value


def original_prepare(
    paths: Sequence[Path], caption_model: Path, clip_model: Path, prompt: str
) -> dict[str, Any]:
    """CPU ms per file of the original script's decode, Kosmos-2 processor and CLIP processor."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(caption_model)
    clip_processor = AutoProcessor.from_pretrained(clip_model)
    rows: dict[str, dict[str, float]] = {}
    for path in paths:

        def decode(path: Path = path) -> Image.Image:
            with Image.open(path) as opened:
                return opened.convert("RGB")

        decode_ms, image = _cpu_ms(decode)
        kosmos_ms, _ = _cpu_ms(lambda image=image: processor(text=prompt, images=image, return_tensors="pt"))
        clip_ms, _ = _cpu_ms(lambda image=image: clip_processor(images=image, return_tensors="pt"))
        rows[path.name] = {"decode": decode_ms, "kosmos": kosmos_ms, "clip": clip_ms}
    return {"per_file": rows, **_summary(rows)}


def kcap_prepare(paths: Sequence[Path], settings: Settings) -> dict[str, Any]:
    """CPU ms per file of Engine.prepare: decode and both preprocessings, as the worker runs them."""
    from workers.captioning.engine import Engine

    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(paths[0].parent, paths, settings)
    engine.prepare(jobs[0])  # warm-up: lazy imports and allocations
    rows = {}
    for path, job in zip(paths, jobs, strict=True):
        total_ms, _ = _cpu_ms(lambda job=job: engine.prepare(job))
        rows[path.name] = {"total": total_ms}
    return {"per_file": rows, **_summary(rows)}


def _summary(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Median CPU ms by kind of photo (12 MP JPEG, 24 MP JPEG, 12 MP PNG), each part and in all."""
    kinds: dict[str, list[dict[str, float]]] = {}
    for name, parts in rows.items():
        kinds.setdefault(_kind(name), []).append({**parts, "all": sum(parts.values())})
    return {
        "by_kind": {
            kind: {part: statistics.median(row[part] for row in group) for part in group[0]}
            for kind, group in sorted(kinds.items())
        }
    }


def _kind(name: str) -> str:
    size = "12 MP" if name.startswith("p12") else "24 MP"
    return f"{size} {'PNG' if name.endswith('.png') else 'JPEG'}"


def fast_decode_agreement(
    paths: Sequence[Path], caption_model: Path, clip_model: Path, *, new_tokens: int = 16
) -> dict[str, Any]:
    """How many captions --fast-decode keeps equal to the default decode, on a model big
    enough that images steer its captions (the "small" preset), greedy, fp32."""
    from dataclasses import replace

    from shared.core.messages import CaptionOptions
    from workers.captioning.engine import Engine

    settings = Settings(caption_model=str(caption_model), clip_model=str(clip_model), dtype="float32")
    exact = Engine.load(settings, eager_scorer=False)
    quick = Engine(exact.captioner, exact.scorer, max_pixels=settings.max_pixels, fast_decode=True)
    options = CaptionOptions(prompts=(settings.prompts[0],), max_new_tokens=new_tokens, score=False)
    jobs = [
        replace(job, options=options) for job in harness.jobs_from_files(paths[0].parent, paths, settings)
    ]
    texts: list[str] = []
    differ: list[str] = []
    for start in range(0, len(jobs), 8):
        batch = jobs[start : start + 8]
        full = exact.run_batch(options, [exact.prepare(job) for job in batch])
        fast = quick.run_batch(options, [quick.prepare(job) for job in batch])
        for job, a, b in zip(batch, full, fast, strict=True):
            texts.append(a.text)
            if a.text != b.text:
                differ.append(job.rel_path)
    return {
        "photos": len(jobs),
        "agree": len(jobs) - len(differ),
        "differ": differ,
        "distinct": len(set(texts)),
    }
