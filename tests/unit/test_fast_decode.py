"""--fast-decode: JPEG photos decoded at a reduced scale, other formats box-reduced after the
decode, both keeping the short side; the record's size and pixel boxes still those of the
upright original; off by default."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.core.messages import CaptionOptions
from shared.core.settings import Settings
from tests.integration.helpers import job_for
from workers.captioning.decode import load_image, open_image, upright_size
from workers.captioning.engine import Engine
from workers.captioning.fast_decode import FAST_DECODE_SHORT_SIDE, draft_to_short_side, reduce_to_short_side

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


@pytest.mark.parametrize(
    ("short_side", "decoded_size"),
    [(448, (1000, 750)), (FAST_DECODE_SHORT_SIDE, (500, 375)), (400, (1000, 750))],
    ids=["448-quarter", "default-eighth", "400-quarter"],  # 1/8 would leave 375 < 400
)
def test_a_large_jpeg_decodes_at_the_smallest_scale_keeping_the_short_side(
    short_side: int, decoded_size: tuple[int, int]
) -> None:
    opened = open_image(_photo_jpeg((4000, 3000)), max_pixels=CAP)
    assert draft_to_short_side(opened, short_side)
    assert load_image(opened).size == decoded_size


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size[0] // 16, size[1] // 16), 50).convert("RGB").resize(size).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "reduced"),
    [
        ((2000, 1500), (334, 250)),
        ((1500, 2000), (250, 334)),
        ((447, 300), (447, 300)),
        ((900, 600), (450, 300)),
    ],
    ids=["landscape-by-6", "portrait-by-6", "under-2x-untouched", "by-2"],
)
def test_other_formats_are_box_reduced_by_an_integer_keeping_the_short_side(
    size: tuple[int, int], reduced: tuple[int, int]
) -> None:
    image = load_image(open_image(_png(size), max_pixels=CAP))
    out = reduce_to_short_side(image, FAST_DECODE_SHORT_SIDE)
    assert out.size == reduced and min(out.size) >= FAST_DECODE_SHORT_SIDE
    if out.size == size:
        assert out is image


@pytest.mark.parametrize("data", [_photo_jpeg((600, 400)), None], ids=["small-jpeg", "png"])
def test_small_jpegs_and_other_formats_are_not_drafted(data: bytes | None) -> None:
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


def test_a_large_png_is_reduced_to_close_pixels(engines: tuple[Engine, Engine]) -> None:
    full, fast = engines
    options = CaptionOptions(prompts=tuple(Settings().prompts), max_new_tokens=4, score=True)
    job = job_for(_png((2400, 1800)), options, "large.png")
    exact, quick = full.prepare(job), fast.prepare(job)
    assert (quick.width, quick.height) == (2400, 1800)
    for a, b in ((exact.caption_pixels, quick.caption_pixels), (exact.clip_pixels, quick.clip_pixels)):
        assert a.shape == b.shape and not torch.equal(a, b)
        assert (a - b).abs().mean() < 0.1
