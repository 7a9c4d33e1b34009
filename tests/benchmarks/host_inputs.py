"""Inputs of the host-path benchmark: many small PNGs, and real-size photo-like JPEGs.

The photos are made here, the same for the same seed: a two-colour light gradient, a dozen
blurred shapes, sensor-like grain and mid-scale texture. The grain is what makes a camera
JPEG weigh megabytes (about 2.3 MB at 12 MP and 5.2 MB at 24 MP at quality 90, like the
phone photos the issue measured), so decoding costs what it costs on real photos.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

TWELVE_MP = (4000, 3000)
TWENTY_FOUR_MP = (6000, 4000)


def small_pngs(folder: Path, count: int, *, size: tuple[int, int] = (64, 64), seed: int = 11) -> list[Path]:
    """count distinct small PNGs (the issue's near-null workload), made once per folder."""
    from workers.tiny.images import tiny_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"s_{i:05d}.png" for i in range(count)]
    if all(path.exists() for path in paths):
        return paths
    for path, image in zip(paths, tiny_images(count, seed=seed, size=size), strict=True):
        image.save(path, "PNG")
    return paths


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    width, height = size
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    light = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), light)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(6, 14)):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(width / 400))
    grain = Image.effect_noise(size, 18).convert("RGB")
    texture = Image.effect_noise((width // 8, height // 8), 40).resize(size, Image.Resampling.BICUBIC)
    noise = ImageChops.add(grain, texture.convert("RGB"), scale=2.0, offset=-128)
    return ImageChops.add(image, noise, scale=1.0, offset=-64)


def photos(folder: Path, *, twelve: int, twenty_four: int, pngs: int) -> list[Path]:
    """JPEG photos of 12 MP and 24 MP, and a few 12 MP PNGs (screenshots, exports), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = (
        [(f"p12_{i:03d}.jpg", TWELVE_MP) for i in range(twelve)]
        + [(f"p24_{i:03d}.jpg", TWENTY_FOUR_MP) for i in range(twenty_four)]
        + [(f"p12_{i:03d}.png", TWELVE_MP) for i in range(pngs)]
    )
    paths = []
    for seed, (name, size) in enumerate(plan):
        path = folder / name
        if not path.exists():
            image = photo(size, seed)
            if path.suffix == ".jpg":
                image.save(path, "JPEG", quality=90)
            else:
                image.save(path, "PNG", compress_level=1)
        paths.append(path)
    return paths
