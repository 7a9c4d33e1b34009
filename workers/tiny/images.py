"""Small, visually distinct test images, the same for the same seed."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw


def tiny_images(n: int, *, seed: int = 0, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """``n`` visually distinct RGB images, the same for the same arguments.

    Each has its own background colour and a few random shapes, so even a
    32 px centre crop differs from image to image.
    """
    rng = random.Random(seed)
    width, height = size
    images: list[Image.Image] = []
    for _ in range(n):
        background = tuple(rng.randrange(256) for _ in range(3))
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 5)):
            x0, x1 = sorted(rng.randrange(width) for _ in range(2))
            y0, y1 = sorted(rng.randrange(height) for _ in range(2))
            box = (x0, y0, x1 + 1, y1 + 1)
            fill = tuple(rng.randrange(256) for _ in range(3))
            if rng.random() < 0.5:
                draw.rectangle(box, fill=fill)
            else:
                draw.ellipse(box, fill=fill)
        images.append(image)
    return images
