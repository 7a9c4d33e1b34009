"""Where a routed image and its sidecars go, and the rule for name collisions.

The rule (documented in docs/output.md):
- an image keeps its relative sub-folder and its file name;
- its caption is ``<stem><caption_ext>`` and its record ``<stem>.json``, beside it, so
  kohya-style trainers find the caption;
- when that stem is already taken in the destination folder by a *different* job (``a.jpg``
  and ``a.png`` side by side, or a file replaced by new content), the stem becomes
  ``<stem>-<first 8 hex of the content hash>``; nothing is ever overwritten;
- an unreadable input goes to the errors root as ``<name>`` with ``<name>.error.json``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shared.core.errors import UnsafePathError

CAPTION_EXT = ".txt"
RECORD_EXT = ".json"
ERROR_EXT = ".error.json"
TEMP_PREFIX = ".kcap-tmp-"
# Set-aside copies of inputs that changed while copied (kcap before 0.4; swept like temps).
STALE_PREFIX = ".kcap-stale-"
METADATA_NAME = "metadata.jsonl"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def job_id_for(rel_path: str, content_sha256: str) -> str:
    """Stable id: the same file with the same bytes is the same job, however often it is seen."""
    digest = hashlib.sha256(f"{rel_path}\0{content_sha256}".encode()).hexdigest()
    return digest[:32]


def sha256_file(path: Path) -> str:
    """A file's content hash, a block at a time (it may be too large to hold in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def safe_relpath(rel_path: str) -> PurePosixPath:
    """A relative path that cannot climb out of a root, or UnsafePathError."""
    if not isinstance(rel_path, str) or not rel_path:
        raise UnsafePathError(f"empty or non-string path {rel_path!r}")
    if "\0" in rel_path or "\\" in rel_path:
        raise UnsafePathError(f"path {rel_path!r} contains a NUL byte or a backslash")
    path = PurePosixPath(rel_path)
    if path.is_absolute() or rel_path.startswith("/"):
        raise UnsafePathError(f"path {rel_path!r} is absolute")
    raw_parts = rel_path.split("/")
    if any(part in ("..", ".", "") for part in raw_parts) or path.name.startswith(TEMP_PREFIX):
        raise UnsafePathError(f"path {rel_path!r} climbs out of its root or is not normal")
    return path


def inside(root: Path, rel_path: str) -> Path:
    """root/rel_path, checked to stay inside root even through symlinked folders."""
    rel = safe_relpath(rel_path)
    target = root.joinpath(*rel.parts)
    if not resolves_inside(target.parent, root):
        raise UnsafePathError(f"path {rel_path!r} leaves {root} through a link")
    return target


def resolves_inside(path: Path, root: Path) -> bool:
    """Whether path, every symlink on the way resolved, lies inside root (resolved too)."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), real_root]) == real_root


def links_outside(path: Path, root: Path, *, follow_symlinks: bool) -> bool:
    """A symlink pointing outside root, which kcap refuses unless told to follow links."""
    return not follow_symlinks and path.is_symlink() and not resolves_inside(path, root)


@dataclass(frozen=True)
class Placement:
    """The files one routed image occupies in its destination folder."""

    image: Path
    caption: Path
    record: Path


def _suffix_start(file_name: str) -> int:
    dot = file_name.rfind(".")
    # A leading dot starts a name, a trailing one ends it: neither starts a suffix.
    return dot if 0 < dot < len(file_name) - 1 else len(file_name)


def stem_of(file_name: str) -> str:
    """The name without its last suffix (``a.jpg`` -> ``a``; ``a.`` and ``.a`` stay whole)."""
    return file_name[: _suffix_start(file_name)]


def suffix_of(file_name: str) -> str:
    """The last suffix with its dot (``a.jpg`` -> ``.jpg``), or "" (``a.``, ``.a``)."""
    return file_name[_suffix_start(file_name) :]


def _stems(file_name: str, content_sha256: str, job_id: str) -> list[str]:
    stem = stem_of(file_name)
    # The job id is unique per (path, bytes): the last resort can never be taken by another job.
    return [stem, f"{stem}-{content_sha256[:8]}", f"{stem}-{content_sha256[:8]}-{job_id[:8]}"]


def candidate_placements(
    dest_dir: Path, file_name: str, content_sha256: str, job_id: str, *, caption_ext: str = CAPTION_EXT
) -> list[Placement]:
    """The placements to try, in order: the plain stem, then hash-suffixed ones."""
    suffix = suffix_of(file_name)
    return [
        Placement(
            image=dest_dir / f"{stem}{suffix}",
            caption=dest_dir / f"{stem}{caption_ext}",
            record=dest_dir / f"{stem}{RECORD_EXT}",
        )
        for stem in _stems(file_name, content_sha256, job_id)
    ]


def candidate_error_placements(
    dest_dir: Path, file_name: str, content_sha256: str, job_id: str
) -> list[Placement]:
    """Error placements: the image under its name, its reason in ``<name>.error.json``."""
    suffix = suffix_of(file_name)
    placements = []
    for stem in _stems(file_name, content_sha256, job_id):
        name = f"{stem}{suffix}"
        reason = dest_dir / f"{name}{ERROR_EXT}"
        placements.append(Placement(image=dest_dir / name, caption=reason, record=reason))
    return placements


def sidecar_name_refusal(file_name: str, *, caption_ext: str = CAPTION_EXT) -> str:
    """Why an image may not keep this name in kcap's folders, or "" when it may.

    The producer sniffs content, so image bytes can arrive as ``shot.txt``, ``photo.json``
    or ``metadata.jsonl``: names kcap writes itself. Filed as they are, such an image would be
    read back as a caption, overwritten by its own record, or clobber the dataset file.
    """
    suffix = suffix_of(file_name).lower()
    written = {caption_ext.lower(): "captions", RECORD_EXT: "records", ".jsonl": "the dataset file"}
    if file_name.lower() == METADATA_NAME or suffix in written:
        what = written.get(suffix, "the dataset file")
        return (
            f"image bytes under the name {file_name!r}, a kind of name kcap writes for {what} "
            f"({suffix or file_name}); rename it with its image extension (for example .png) "
            "and drop it in again"
        )
    return ""


def is_ignored_name(name: str) -> bool:
    """Hidden, temporary and partial files are never inputs."""
    lowered = name.lower()
    return (
        name.startswith(".")
        or name.startswith("~")
        or lowered.endswith((".part", ".partial", ".tmp", ".crdownload", ".download", "~"))
        or name.startswith(TEMP_PREFIX)
    )
