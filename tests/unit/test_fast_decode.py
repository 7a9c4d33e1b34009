"""--fast-decode: JPEG photos decoded at a reduced scale, with the record's size and pixel
boxes still those of the upright original; off by default; other formats untouched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.core.messages import CaptionOptions
from shared.core.settings import Settings
from tests.integration.helpers import job_for
from workers.captioning.decode import draft_to_short_side, load_image, open_image, upright_size
from workers.captioning.engine import Engine

CAP = 100_000_000


def _photo_jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    image = Image.effect_noise((size[0] // 16, size[1] // 16), 50).convert("RGB").resize(size)
    buffer = io.BytesIO()
    params: dict[str, object] = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    image.save(buffer, "JPEG", **params)
    return buffer.getvalue()


def test_a_large_jpeg_decodes_at_a_reduced_scale_keeping_the_short_side() -> None:
    opened = open_image(_photo_jpeg((4000, 3000)), max_pixels=CAP)
    assert draft_to_short_side(opened, 448)
    decoded = load_image(opened)
    assert min(decoded.size) >= 448 and decoded.size == (1000, 750)  # 1/4 scale: 1/8 would be 375


@pytest.mark.parametrize("data", [_photo_jpeg((600, 400)), None], ids=["small-jpeg", "png"])
def test_small_jpegs_and_other_formats_are_left_alone(data: bytes | None) -> None:
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", (2000, 1500), "red").save(buffer, "PNG")
        data = buffer.getvalue()
    opened = open_image(data, max_pixels=CAP)
    size = opened.size
    assert not draft_to_short_side(opened, 448)
    assert load_image(opened).size == size


def test_the_upright_size_follows_a_quarter_turn() -> None:
    opened = open_image(_photo_jpeg((1600, 1200), orientation=6), max_pixels=CAP)
    assert upright_size(opened) == (1200, 1600)


@pytest.fixture(scope="module")
def engines(tiny_models: tuple[Path, Path]) -> tuple[Engine, Engine]:
    kosmos, clip = tiny_models
    settings = Settings(caption_model=str(kosmos), clip_model=str(clip), dtype="float32")
    full = Engine.load(settings, eager_scorer=True)
    fast = Engine(full.captioner, full.scorer, max_pixels=CAP, fast_decode=True, scorer=full.scorer())
    return full, fast


def test_the_engine_records_the_original_size_and_is_off_by_default(engines: tuple[Engine, Engine]) -> None:
    full, fast = engines
    assert Settings().fast_decode is False and full.fast_decode is False
    options = CaptionOptions(prompts=tuple(Settings().prompts), max_new_tokens=4, score=True)
    job = job_for(_photo_jpeg((2400, 1800), orientation=6), options, "turned.jpg")
    exact, quick = full.prepare(job), fast.prepare(job)
    assert (exact.width, exact.height) == (quick.width, quick.height) == (1800, 2400)
    assert exact.caption_pixels.shape == quick.caption_pixels.shape
    # Other pixels, close ones: the same picture, decoded at a quarter of the scale.
    assert not torch.equal(exact.caption_pixels, quick.caption_pixels)
    assert (exact.caption_pixels - quick.caption_pixels).abs().mean() < 0.1
