"""Resize a photo once per target size, before the processors see it: same pixels, less work.

transformers' PIL-backend image processors (CLIP's, and Kosmos-2's, which is CLIP's with a
square size) turn the full image into a numpy array, move its axes, turn it back into a
PIL image and only then resize it. On a 12 MP photo those full-size copies cost more than
the resize itself, and each processor pays them again. Here each distinct target size is
made once, straight from the decoded PIL image, with the processor's own size rule, filter
and reducing_gap: exactly the resize the processor would run. Handed the small image, the
processor's own resize is to the same size, which PIL answers with a copy, so its
pixel_values are bit-identical (tests/unit/test_presize.py checks with torch.equal).

Any processor this does not recognise (a torchvision backend, a family with its own resize)
gets the full image, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


def target_size(image_processor: Any, width: int, height: int) -> tuple[int, int, int] | None:
    """(width, height, resample) the processor would resize an image of this size to, or None
    when its resize is not the plain PIL-backend one this module knows."""
    try:
        from transformers.image_processing_backends import PilBackend
        from transformers.image_transforms import get_resize_output_image_size
        from transformers.image_utils import ChannelDimension
    except ImportError:  # another transformers layout: leave the processor alone
        return None
    cls = type(image_processor)
    if not isinstance(image_processor, PilBackend) or cls.resize is not PilBackend.resize:
        return None
    if cls._preprocess is not PilBackend._preprocess or not getattr(image_processor, "do_resize", False):
        return None
    size: Any = getattr(image_processor, "size", None)
    if size is None:
        return None
    if getattr(size, "longest_edge", None) or getattr(size, "max_height", None):
        return None  # rarer rules: not worth a second implementation
    resample_rule = getattr(image_processor, "resample", None)
    resample = int(resample_rule) if resample_rule is not None else int(Image.Resampling.BILINEAR)
    if size.shortest_edge:
        # A zero-strided stand-in of the image's shape: the processor's own rule, no memory.
        shape = np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (3, height, width))
        new_h, new_w = get_resize_output_image_size(
            shape, size=size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
    elif size.height and size.width:
        new_h, new_w = size.height, size.width
    else:
        return None
    return int(new_w), int(new_h), resample


def presize(image: Image.Image, image_processors: Sequence[Any]) -> list[Image.Image]:
    """One image per processor: resized to its target, each distinct size made once."""
    if image.mode != "RGB":
        return [image for _ in image_processors]  # the processors convert first; keep their path
    made: dict[tuple[int, int, int], Image.Image] = {}
    out: list[Image.Image] = []
    for processor in image_processors:
        target = target_size(processor, image.width, image.height)
        if target is None:
            out.append(image)
            continue
        if target not in made:
            width, height, resample = target
            made[target] = image.resize((width, height), resample=resample)
        out.append(made[target])
    return out
