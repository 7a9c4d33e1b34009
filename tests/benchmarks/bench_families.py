"""CPU images/s of each family's tiny model, side by side in one run (the README's table).

    python -m tests.benchmarks.bench_families [--images 32] [--batch-size 8] [--new-tokens 16]

Each caption family captions the same images through its adapter (preprocess, forward,
postprocess: what a worker's batch does), each scorer family scores the same captions.
Tiny random models: the figures compare the families' pipelines (processor, prompt
length, image tokens) on this machine, not the real checkpoints' speed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

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


def main() -> None:
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
        f"batch {args.batch_size}, {args.new_tokens} new tokens; best of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        captions: list[str] = []
        print(f"{'caption family':<16}{'images/s':>10}{'ms/image':>10}")
        for family, build in CAPTIONERS.items():
            adapter = load_captioner(
                str(build(root / family)), device=CPU, dtype=torch.float32, max_image_tokens=1280
            )
            work = partial(
                caption_pass, adapter, images, batch_size=args.batch_size, new_tokens=args.new_tokens
            )
            captions = captions or work()  # also the warm-up
            best = min(_timed(work) for _ in range(args.repeats))
            print(f"{family:<16}{len(images) / best:>10.1f}{1000 * best / len(images):>10.1f}")
        print(f"{'scorer family':<16}{'images/s':>10}{'ms/image':>10}")
        for family, build in SCORERS.items():
            scorer = load_scorer(str(build(root / family)), device=CPU, dtype=torch.float32)
            work = partial(score_pass, scorer, images, captions, batch_size=args.batch_size)
            work()  # warm-up
            best = min(_timed(work) for _ in range(args.repeats))
            print(f"{family:<16}{len(images) / best:>10.1f}{1000 * best / len(images):>10.1f}")


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
) -> None:
    for start in range(0, len(images), batch_size):
        items = [scorer.preprocess(image) for image in images[start : start + batch_size]]
        scorer.score(items, captions[start : start + batch_size])


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
