"""presize: the processors' pixel values are bit-identical to what they make from the full
image, for the CLIP rule (shortest edge, then crop) and Kosmos-2's (a square), on odd sizes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from workers.captioning.presize import presize, target_size
from workers.tiny.clip import clip_processor
from workers.tiny.kosmos2 import kosmos2_processor

# Small enough to keep the test fast; the rule does not depend on the size (bench_host runs
# 12 and 24 MP photos through the same code and fails on any caption mismatch).
SIZES = [(1200, 900), (900, 1200), (225, 224), (224, 224), (100, 50), (1001, 333), (7, 9), (300, 6)]


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    small = Image.effect_noise((max(1, size[0] // 16), max(1, size[1] // 16)), 40 + seed).convert("RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


def _processors() -> list[object]:
    return [
        kosmos2_processor(preset="tiny224").image_processor,
        clip_processor(preset="tiny224").image_processor,
        CLIPImageProcessorPil(use_square_size=True),  # the real Kosmos-2 checkpoint's rule
        CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
    ]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_pixel_values_are_bit_identical_to_the_processors_own(size: tuple[int, int]) -> None:
    image = _photo(size, seed=size[0] % 17)
    processors = _processors()
    for processor, small in zip(processors, presize(image, processors), strict=True):
        full = processor(images=image, return_tensors="pt")["pixel_values"]  # type: ignore[operator]
        mine = processor(images=small, return_tensors="pt")["pixel_values"]  # type: ignore[operator]
        assert torch.equal(full, mine), f"{type(processor).__name__} {size}"


def test_a_large_photo_is_made_small_once_per_distinct_size() -> None:
    image = _photo((1200, 900), seed=3)
    same_rule = [
        clip_processor(preset="tiny224").image_processor,
        clip_processor(preset="tiny224").image_processor,
    ]
    first, second = presize(image, same_rule)
    assert first is second and first.size == (298, 224)
    square, shortest = presize(image, [CLIPImageProcessorPil(use_square_size=True), same_rule[0]])
    assert square.size == (224, 224) and shortest.size == (298, 224)


def test_a_processor_it_does_not_know_gets_the_full_image() -> None:
    image = _photo((640, 480), seed=4)

    class OwnResize(CLIPImageProcessorPil):  # a family with a resize of its own
        def resize(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            return super().resize(*args, **kwargs)  # type: ignore[arg-type]

    for unknown in (OwnResize(), object()):
        assert target_size(unknown, 640, 480) is None
        assert presize(image, [unknown])[0] is image
    grey = image.convert("L")  # the processors convert to RGB first: their path is kept
    assert presize(grey, [CLIPImageProcessorPil()])[0] is grey
