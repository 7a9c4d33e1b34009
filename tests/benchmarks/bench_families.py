"""CPU images/s of each family's tiny model, side by side in one run (the table in docs/models.md).

    python -m tests.benchmarks.bench_families [--images 32] [--batch-size 8] [--new-tokens 16]

Each caption family captions the same images through its adapter (preprocess, forward,
postprocess: what a worker's batch does), each scorer family scores the same captions.
Tiny random models: the figures compare the families' pipelines (processor, prompt
length, image tokens) on this machine, not the real checkpoints' speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from workers.captioning.families.base import CaptionAdapter
from workers.captioning.families.registry import load_captioner
from workers.captioning.scorers.base import ScorerAdapter
from workers.captioning.scorers.registry import load_scorer
from workers.tiny.families import CAPTIONERS, SCORERS
from workers.tiny.images import tiny_images

CPU = torch.device("cpu")
PROMPT = "detailed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed passes")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images = tiny_images(args.images, seed=7, size=(320, 240))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images of 320x240, "
        f"batch {args.batch_size}, {args.new_tokens} new tokens; best of {args.repeats}; "
        "ratios against the first row of each table, measured in this process"
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        captions: list[str] = []
        table = _Table("caption family")
        for family, build in CAPTIONERS.items():
            adapter = load_captioner(
                str(build(root / family)), device=CPU, dtype=torch.float32, max_image_tokens=1280
            )
            work = partial(
                caption_pass, adapter, images, batch_size=args.batch_size, new_tokens=args.new_tokens
            )
            first = work()  # also the warm-up
            captions = captions or first
            # Greedy decoding: every timed pass must write the first pass's captions again.
            table.row(
                family, len(images), [_timed(work, first, family, problems) for _ in range(args.repeats)]
            )
        table = _Table("scorer family")
        for family, build in SCORERS.items():
            scorer = load_scorer(str(build(root / family)), device=CPU, dtype=torch.float32)
            work = partial(score_pass, scorer, images, captions, batch_size=args.batch_size)
            first = work()  # also the warm-up
            table.row(
                family, len(images), [_timed(work, first, family, problems) for _ in range(args.repeats)]
            )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


class _Table:
    """Prints one table: images/s and CPU ms per image, with ratios against its first row."""

    def __init__(self, title: str) -> None:
        self.base: tuple[float, float] | None = None
        header = f"{'images/s':>10}{'vs first':>10}{'CPU ms/img':>12}{'vs first':>10}{'peak RSS MiB':>14}"
        print(f"{title:<16}{header}")

    def row(self, name: str, images: int, passes: list[tuple[float, float]]) -> None:
        wall, cpu = min(passes)  # the fastest pass, and its CPU
        rate, cpu_ms = images / wall, 1000 * cpu / images
        self.base = self.base or (rate, cpu_ms)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(
            f"{name:<16}{rate:>10.1f}{rate / self.base[0]:>9.2f}x{cpu_ms:>12.1f}"
            f"{cpu_ms / self.base[1]:>9.2f}x{peak:>14.0f}"
        )


def caption_pass(
    adapter: CaptionAdapter, images: list[Image.Image], *, batch_size: int, new_tokens: int
) -> list[str]:
    """Caption every image as a worker's batches would; the captions."""
    texts: list[str] = []
    for start in range(0, len(images), batch_size):
        items = [adapter.preprocess(image) for image in images[start : start + batch_size]]
        ids = adapter.forward(items, prompt=PROMPT, max_new_tokens=new_tokens)
        texts += [c.text for c in adapter.postprocess(ids, max_new_tokens=new_tokens)]
    return texts


def score_pass(
    scorer: ScorerAdapter, images: list[Image.Image], captions: list[str], *, batch_size: int
) -> list[float]:
    """Score every caption against its image in batches; the routing scores."""
    scores: list[float] = []
    for start in range(0, len(images), batch_size):
        items = [scorer.preprocess(image) for image in images[start : start + batch_size]]
        batch = scorer.score(items, captions[start : start + batch_size])
        scores += [score.routing("original") for score in batch]
    return scores


def _timed(
    work: Callable[[], list[Any]], expected: list[Any], family: str, problems: list[str]
) -> tuple[float, float]:
    """(wall s, CPU s) of one pass; a pass that differs from the first is a problem."""
    wall, cpu = time.perf_counter(), time.process_time()
    got = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # The same inputs in the same batches, in one process on the same threads: the same
    # arithmetic, so the same captions and bit for bit the same scores.
    if got != expected:
        problems.append(f"{family}: a repeated pass gave other results than the first")
    return wall, cpu


if __name__ == "__main__":
    sys.exit(main())
