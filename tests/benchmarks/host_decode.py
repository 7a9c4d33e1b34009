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
