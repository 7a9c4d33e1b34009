"""Bytes to an upright RGB image, with caps, and a clear reason when it cannot be done."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import BadImageError


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode, take the first frame, turn by EXIF, composite alpha onto white, convert to RGB."""
    if not data:
        raise BadImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning fires at a fixed size; our cap below is the rule.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"image is {width}x{height} = {width * height} pixels, over the cap of "
                    f"{max_pixels} (raise KCAP_MAX_PIXELS to accept it)"
                )
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadImageError("not an image Pillow can read (unknown or corrupt format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"corrupt or truncated image: {exc}") from exc
    if width < 1 or height < 1:
        raise BadImageError(f"image has no pixels ({width}x{height})")
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        # Palette transparency only survives as RGBA.
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping to white.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
