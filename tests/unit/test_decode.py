"""decode_image on every kind of odd input: a clear BadImageError, or an upright RGB image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from shared.core.errors import BadImageError
from workers.captioning.decode import decode_image

CAP = 100_000_000


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def declared_png(width: int, height: int) -> bytes:
    """A valid PNG header that declares width x height, with a few bytes of pixel data.

    Decoding it for real would allocate width*height*3 bytes: a decompression bomb, built cheaply.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


def exif_rotated_jpeg(orientation: int) -> bytes:
    """40x20 stored pixels: left half red, right half blue, with an EXIF orientation tag."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def near(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# -- refused, each with a reason that says what is wrong ------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"empty file \(0 bytes\)"),
        (truncated_jpeg(), "truncated"),
        (b"shopping list: eggs, milk\n", "not an image Pillow can read"),
        (b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt or truncated image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image Pillow can read"),
    ],
    ids=["zero-bytes", "truncated-jpeg", "text-named-jpg", "jpeg-magic-then-junk", "png-magic-then-junk"],
)
def test_unusable_bytes_raise_bad_image_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadImageError, match=reason):
        decode_image(data, max_pixels=CAP)


def test_a_huge_declared_size_is_refused_before_any_pixel_is_decoded() -> None:
    bomb = declared_png(12_000, 10_000)  # 120 M pixels, over the 100 M cap, from 100 bytes
    assert len(bomb) < 200
    with pytest.raises(BadImageError, match=r"12000x10000 = 120000000 pixels, over the cap of 100000000"):
        decode_image(bomb, max_pixels=CAP)


def test_a_bomb_far_over_pillows_own_limit_still_names_our_cap() -> None:
    with pytest.raises(BadImageError, match="KCAP_MAX_PIXELS"):
        decode_image(declared_png(60_000, 60_000), max_pixels=CAP)


def tall_png(width: int = 1, height: int = 65_000) -> bytes:
    """A real, fully decodable PNG of one column: a few hundred bytes."""
    return encode(Image.new("L", (width, height), 7))


def test_a_tiny_tall_png_is_refused_for_its_aspect_ratio_before_decoding() -> None:
    data = tall_png()
    assert len(data) < 400
    with pytest.raises(BadImageError, match=r"1x65000, an aspect ratio of 65000:1, over the cap of 50:1"):
        decode_image(data, max_pixels=CAP, max_aspect_ratio=50)
    with pytest.raises(BadImageError, match="KCAP_MAX_ASPECT_RATIO"):
        decode_image(tall_png(65_000, 1), max_pixels=CAP, max_aspect_ratio=50)


def test_the_aspect_ratio_cap_admits_a_panorama_and_can_be_turned_off() -> None:
    assert decode_image(tall_png(1000, 20), max_pixels=CAP, max_aspect_ratio=50).size == (1000, 20)
    assert decode_image(tall_png(1, 3000), max_pixels=CAP, max_aspect_ratio=0).size == (1, 3000)


def test_the_pixel_cap_is_ours_to_set() -> None:
    small = encode(Image.new("RGB", (20, 20), "red"))
    with pytest.raises(BadImageError, match="400 pixels, over the cap of 399"):
        decode_image(small, max_pixels=399)
    assert decode_image(small, max_pixels=400).size == (20, 20)


def test_a_raised_cap_is_not_overruled_by_pillows_fixed_limit() -> None:
    # Over twice Pillow's default MAX_IMAGE_PIXELS (89 M): Pillow alone would refuse at open().
    # The declared size is accepted; the few real bytes then fail as a truncated image instead.
    with pytest.raises(BadImageError) as caught:
        decode_image(declared_png(15_000, 15_000), max_pixels=300_000_000)
    assert "cap" not in str(caught.value) and "bomb" not in str(caught.value)


# -- accepted, each turned into an upright RGB image ----------------------------------------


def test_rgba_is_composited_onto_white() -> None:
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (255, 0, 0, 128))
    decoded = decode_image(encode(image), max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)  # transparent black shows the white
    assert decoded.getpixel((1, 0)) == (255, 0, 0)
    assert near(decoded.getpixel((2, 0)), (255, 127, 127), tolerance=1)  # half red over white


def test_palette_png_with_transparency_is_composited_onto_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    data = encode(image, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)  # the transparent index
    assert decoded.getpixel((1, 0)) == (0, 128, 0)


def test_greyscale_with_alpha_is_composited_onto_white() -> None:
    decoded = decode_image(encode(Image.new("LA", (3, 3), (0, 0))), max_pixels=CAP)
    assert decoded.getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert near(decoded.getpixel((8, 8)), (255, 0, 0))


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    data = encode(Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (156, 156, 156)  # 40000 / 256, not 255


def test_sixteen_bit_rgb_png_is_read_as_rgb() -> None:
    # Pillow has no 16-bit RGB mode; build the PNG by hand to be sure what the file holds.
    width, height = 2, 1
    row = b"\0" + struct.pack(">6H", 65535, 0, 0, 0, 0, 65535)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row))
        + _chunk(b"IEND", b"")
    )
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 0, 0) and decoded.getpixel((1, 0)) == (0, 0, 255)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(buffer.getvalue())), "n_frames", 1) == 3
    decoded = decode_image(buffer.getvalue(), max_pixels=CAP)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (255, 0, 0)


@pytest.mark.parametrize(("orientation", "top_left"), [(6, (255, 0, 0)), (8, (0, 0, 255))])
def test_exif_rotated_jpeg_is_returned_upright(orientation: int, top_left: tuple[int, int, int]) -> None:
    data = exif_rotated_jpeg(orientation)
    assert Image.open(io.BytesIO(data)).size == (40, 20)  # as stored
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.size == (20, 40)  # as meant to be seen: the caption describes this
    assert near(decoded.getpixel((10, 5)), top_left)


def test_a_one_pixel_image_decodes() -> None:
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (10, 200, 30))), max_pixels=CAP)
    assert decoded.size == (1, 1) and decoded.getpixel((0, 0)) == (10, 200, 30)


def test_the_decoded_image_holds_its_pixels_after_the_bytes_are_gone() -> None:
    data = bytearray(encode(Image.new("RGB", (4, 4), (1, 2, 3)), "BMP"))
    decoded = decode_image(bytes(data), max_pixels=CAP)
    data[:] = b"\0" * len(data)
    assert decoded.getpixel((3, 3)) == (1, 2, 3)
