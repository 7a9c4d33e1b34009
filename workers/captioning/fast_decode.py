"""--fast-decode: shrink a photo cheaply before the processors' own resize (other pixels, opt-in).

The processors bring every image down to 224 pixels on its short side. With the full
decode, a 12 MP photo is decoded whole and then resized from 4000 columns by a bicubic
filter 36 taps wide, once per processor: most of its cost. Here a JPEG is decoded at 1/2,
1/4 or 1/8 scale (libjpeg's DCT scaling: each 8x8 block averaged, not point-sampled), and
any other image (PNG, WebP, what DCT scaling left over) is box-averaged by an integer
factor with Image.reduce, in both cases keeping at least `short_side` pixels, so the
processor's bicubic resize still does the last step. The pixels differ slightly from a full
decode's resize, which is why it is not the default.
"""

from __future__ import annotations

import math

from PIL import Image

# The processors' own short side. A 12 MP JPEG then decodes at 1/8 scale (500x375), 28%
# less CPU than keeping 448 (1/4 scale, 1000x750); the captions it changes are counted by
# tests/benchmarks/bench_host.py (r), for both, beside the CPU they cost.
FAST_DECODE_SHORT_SIDE = 224


def draft_to_short_side(image: Image.Image, short_side: int) -> bool:
    """JPEG only, before the pixels are decoded: ask libjpeg for the smallest DCT scale that
    keeps the short side at least short_side pixels. True when it applied."""
    if image.format != "JPEG" or min(image.size) <= short_side:
        return False
    scale = short_side / min(image.size)
    wanted = (math.ceil(image.width * scale), math.ceil(image.height * scale))
    return image.draft("RGB", wanted) is not None


def reduce_to_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """A decoded image box-averaged by the largest integer factor that keeps the short side
    at least short_side pixels; the image itself when no factor of 2 or more does."""
    factor = min(image.size) // short_side
    if factor < 2:
        return image
    return image.reduce(factor)
