"""(r) in process: what preparing one real-size photo costs, the original script's way,
kcap's way, and the floor under any bit-identical way, in CPU milliseconds on one thread.

The original script opened the file, converted it to RGB and handed the full-size image to
the Kosmos-2 processor and to the CLIP processor. kcap's worker runs Engine.prepare on the
bytes as it gets them from the blob store: the decode and both preprocessings that feed a
batch. The floor is what pixel values bit-identical to the processors' own need at the
least: one full decode, and one bicubic resize from full size per processor target (each
measured alone). Every way runs on the same photo one after the other, so a machine that
gets busier during the run moves them together and the ratios hold.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from shared.core.settings import Settings
from tests.benchmarks import harness

# --fast-decode's short side, compared: kcap's default, and the one before it.
FAST_SHORT_SIDES = (224, 448)


def _cpu_ms(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.thread_time()
    value = work()
    return 1000 * (time.thread_time() - started), value


def _original(path: Path, processor: Any, clip_processor: Any, prompt: str) -> dict[str, float]:
    def decode() -> Image.Image:
        with Image.open(path) as opened:
            return opened.convert("RGB")

    decode_ms, image = _cpu_ms(decode)
    kosmos_ms, _ = _cpu_ms(lambda: processor(text=prompt, images=image, return_tensors="pt"))
    clip_ms, _ = _cpu_ms(lambda: clip_processor(images=image, return_tensors="pt"))
    return {"decode": decode_ms, "kosmos": kosmos_ms, "clip": clip_ms}


def _floor(data: bytes, image_processors: Sequence[Any]) -> dict[str, float]:
    """One full decode, then each processor's own resize from full size, each timed alone."""
    from workers.captioning.presize import target_size

    def decode() -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    decode_ms, image = _cpu_ms(decode)
    row = {"decode": decode_ms}
    for name, processor in zip(("kosmos resize", "clip resize"), image_processors, strict=True):
        target = target_size(processor, image.width, image.height)
        if target is None:
            raise RuntimeError(f"presize does not know {type(processor).__name__}: no floor to show")
        row[name], _ = _cpu_ms(lambda target=target: image.resize(target[:2], resample=target[2]))
    return row


def photo_costs(
    paths: Sequence[Path], caption_model: Path, clip_model: Path, settings: Settings
) -> dict[str, Any]:
    """CPU ms per file and median by kind of photo, for each way: "original", "floor",
    "kcap" (Engine.prepare) and "fast <short side>" (Engine.prepare, --fast-decode)."""
    from transformers import AutoProcessor

    from workers.captioning.engine import Engine

    processor = AutoProcessor.from_pretrained(caption_model)
    clip_processor = AutoProcessor.from_pretrained(clip_model)
    exact = Engine.load(settings, eager_scorer=True)
    engines = {"kcap": exact} | {
        f"fast {side}": Engine(
            exact.captioner,
            exact.scorer,
            max_pixels=settings.max_pixels,
            fast_decode=True,
            fast_short_side=side,
            scorer=exact.scorer(),
        )
        for side in FAST_SHORT_SIDES
    }
    jobs = harness.jobs_from_files(paths[0].parent, paths, settings)
    for engine in engines.values():  # warm-up: lazy imports and allocations
        engine.prepare(jobs[0], paths[0].read_bytes())
    image_processors = [processor.image_processor, clip_processor.image_processor]
    rows: dict[str, dict[str, dict[str, float]]] = {way: {} for way in ("original", "floor", *engines)}
    for path, job in zip(paths, jobs, strict=True):
        data = path.read_bytes()
        rows["original"][path.name] = _original(path, processor, clip_processor, settings.prompts[0])
        rows["floor"][path.name] = _floor(data, image_processors)
        for way, engine in engines.items():
            total_ms, _ = _cpu_ms(lambda engine=engine, job=job, data=data: engine.prepare(job, data))
            rows[way][path.name] = {"total": total_ms}
    return {way: {"per_file": by_file, **_summary(by_file)} for way, by_file in rows.items()}


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
) -> dict[str, dict[str, Any]]:
    """By --fast-decode short side: how many captions it keeps equal to the default decode's,
    on a model big enough that images steer its captions (the "small" preset), greedy, fp32."""
    from shared.core.messages import CaptionOptions
    from workers.captioning.engine import Engine

    settings = Settings(caption_model=str(caption_model), clip_model=str(clip_model), dtype="float32")
    exact = Engine.load(settings, eager_scorer=False)
    quick = {
        side: Engine(
            exact.captioner,
            exact.scorer,
            max_pixels=settings.max_pixels,
            fast_decode=True,
            fast_short_side=side,
        )
        for side in FAST_SHORT_SIDES
    }
    options = CaptionOptions(prompts=(settings.prompts[0],), max_new_tokens=new_tokens, score=False)
    jobs = [
        replace(job, options=options) for job in harness.jobs_from_files(paths[0].parent, paths, settings)
    ]
    texts: list[str] = []
    differ: dict[int, list[str]] = {side: [] for side in quick}
    for start in range(0, len(jobs), 8):
        batch = jobs[start : start + 8]
        full = exact.run_batch(options, [exact.prepare(job) for job in batch])
        texts += [caption.text for caption in full]
        for side, engine in quick.items():
            fast = engine.run_batch(options, [engine.prepare(job) for job in batch])
            differ[side] += [
                job.rel_path for job, a, b in zip(batch, full, fast, strict=True) if a.text != b.text
            ]
    return {  # by short side, as a JSON key
        str(side): {
            "photos": len(jobs),
            "agree": len(jobs) - len(d),
            "differ": d,
            "distinct": len(set(texts)),
        }
        for side, d in differ.items()
    }
