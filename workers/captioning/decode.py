"""Bytes to an upright RGB image, with caps, and a clear reason when it cannot be done.

The bytes come from anyone who can drop a file, so every failure Pillow can raise while
parsing them becomes a BadImageError: the job is then routed to errors, never lost.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from shared.core.errors import BadImageError

_limit_lock = threading.Lock()


def decode_image(data: bytes, *, max_pixels: int, max_aspect_ratio: float = 0.0) -> Image.Image:
    """Decode, take the first frame, turn by EXIF, composite alpha onto white, convert to RGB."""
    return load_image(open_image(data, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio))


def open_image(data: bytes, *, max_pixels: int, max_aspect_ratio: float = 0.0) -> Image.Image:
    """Read the header only and apply the caps; the pixels are not decoded yet.

    A max_aspect_ratio of 0 turns that cap off. It exists because the processors scale the
    *shortest* side to 224: a 1x65000 PNG of 205 bytes becomes 224x14.5M pixels, gigabytes.
    """
    if not data:
        raise BadImageError("empty file (0 bytes)")
    _follow_pillow_limit(max_pixels)
    with _decoding_errors(max_pixels):
        with warnings.catch_warnings():
            # Pillow's own bomb warning fires at a fixed size; our cap below is the rule.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise _over_cap(width, height, max_pixels)
        if width < 1 or height < 1:
            raise BadImageError(f"image has no pixels ({width}x{height})")
        ratio = max(width, height) / min(width, height)
        if max_aspect_ratio and ratio > max_aspect_ratio:
            raise BadImageError(
                f"image is {width}x{height}, an aspect ratio of {ratio:.0f}:1, over the cap of "
                f"{max_aspect_ratio:g}:1 (the models scale its short side to 224 pixels; raise "
                "KCAP_MAX_ASPECT_RATIO to accept it)"
            )
        return image


# EXIF orientations that turn the image a quarter: its upright width is its stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The (width, height) of an opened image once turned by its EXIF orientation."""
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block: exif_transpose will not turn it either
        return width, height
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def load_image(image: Image.Image) -> Image.Image:
    """Decode the pixels of an opened image into an upright RGB image."""
    with _decoding_errors(Image.MAX_IMAGE_PIXELS or 0), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image.seek(0)  # animated GIF/WebP: the first frame
        image.load()
        # In place: a 12 MP photo is 36 MB, and a copy per step is CPU a GPU host lacks.
        ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb(image)


@contextlib.contextmanager
def _decoding_errors(max_pixels: int) -> Iterator[None]:
    """Every failure Pillow can raise on hostile bytes, as a BadImageError with a reason."""
    try:
        yield
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(
            f"decompression bomb refused: {exc} (the cap is {max_pixels} pixels: KCAP_MAX_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise BadImageError("not an image Pillow can read (unknown or corrupt format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"corrupt or truncated image: {exc}") from exc
    except Exception as exc:
        # Malformed headers also surface as struct.error, IndexError, MemoryError, ...
        raise BadImageError(f"cannot decode the image ({type(exc).__name__}: {exc})") from exc


def _over_cap(width: int, height: int, max_pixels: int) -> BadImageError:
    return BadImageError(
        f"image is {width}x{height} = {width * height} pixels, over the cap of "
        f"{max_pixels} (raise KCAP_MAX_PIXELS to accept it)"
    )


def _follow_pillow_limit(max_pixels: int) -> None:
    """Let our cap, not Pillow's fixed one, decide: a raised KCAP_MAX_PIXELS must work.

    Pillow refuses at open() above twice its MAX_IMAGE_PIXELS; keeping that at least our cap
    means Pillow only ever refuses what we would refuse too. It only ever grows, so threads
    decoding with different caps cannot undo each other.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        with _limit_lock:
            if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = max_pixels


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        # Palette transparency only survives as RGBA.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("RGB", "L") and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping to white.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode == "RGB":
        return image  # convert() would copy it
    return image.convert("RGB")
