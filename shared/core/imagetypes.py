"""Recognising images by their first bytes, not only by their extension."""

from __future__ import annotations

from pathlib import Path

from shared.core.naming import IMAGE_SUFFIXES

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff(head: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def looks_like_image(path: Path) -> bool:
    """An input candidate: an image extension, or image bytes under any name.

    A file with an image extension is taken even when its bytes are not an image, so that it
    reaches the errors folder with a reason instead of being silently skipped.
    """
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return sniff(handle.read(16)) is not None
    except OSError:
        return False
