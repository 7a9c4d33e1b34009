"""Where a routed image and its sidecars go, and the rule for name collisions.

The rule (documented in docs/output.md):
- an image keeps its relative sub-folder and its file name;
- its caption is ``<stem><caption_ext>`` and its record ``<stem>.json``, beside it, so
  kohya-style trainers find the caption;
- when that stem is already taken in the destination folder by a *different* job (``a.jpg``
  and ``a.png`` side by side, or a file replaced by new content), the stem becomes
  ``<stem>-<first 8 hex of the content hash>``; nothing is ever overwritten;
- an unreadable input goes to the errors root as ``<name>`` with ``<name>.error.json``;
- a name that would make any of those names longer than NAME_MAX (255 bytes) keeps the
  start of its stem that fits, then ``~<first 8 hex of the sha256 of the whole name>``: the
  image, its caption and its record still share one stem, and the record's ``source`` keeps
  the name whole;
- an error whose folder under the errors root would pass PATH_MAX is filed in the errors
  root itself (its ``source`` says where it was).

Names are held as Python holds file names (PEP 383): the bytes decoded as UTF-8, and a byte
that is not UTF-8 as a lone surrogate (U+DC80..U+DCFF). ``name_bytes`` gives the bytes back,
so a name that is not UTF-8 is filed under the very same bytes.
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

# The limits of Linux file systems (ext4, xfs, btrfs, tmpfs), in bytes: one name, and a
# whole path with its closing NUL.
NAME_MAX = 255
PATH_MAX = 4096
# Every temp name has this length (TEMP_PREFIX and 24 hex), whatever it stands in for.
TEMP_NAME_BYTES = len(TEMP_PREFIX) + 24

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def name_bytes(name: str) -> bytes:
    """A name or path as the file system holds it (os.fsencode on Linux, PEP 383)."""
    return name.encode("utf-8", "surrogateescape")


def shown(name: str) -> str:
    """A name for people: a byte that is not UTF-8 as a ``\\xNN`` escape, the rest as it is."""
    try:
        return name_bytes(name).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (junk from a message)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8(name: str) -> bool:
    """Whether a name's bytes are UTF-8 (JSON readers outside Python can carry it)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def job_id_for(rel_path: str, content_sha256: str) -> str:
    """Stable id: the same file with the same bytes is the same job, however often it is seen.

    Made from the path's bytes, so a name that is not UTF-8 has an id too (and a UTF-8 name
    keeps the id it always had).
    """
    digest = hashlib.sha256(name_bytes(rel_path) + b"\0" + content_sha256.encode()).hexdigest()
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
    # A backslash is a plain name character on POSIX, and a separator only where the route
    # worker's system says so (Windows): only there could it climb out of a root.
    if "\0" in rel_path or ((os.sep != "/" or os.altsep is not None) and "\\" in rel_path):
        raise UnsafePathError(f"path {rel_path!r} contains a NUL byte or a backslash")
    try:
        name_bytes(rel_path)
    except UnicodeEncodeError as exc:  # a surrogate no file name decodes to: not a path
        raise UnsafePathError(f"path {rel_path!r} is not a file name: {exc}") from exc
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


# "~" and 8 hex of the whole name's hash: what marks a stem cut to fit NAME_MAX.
_CUT_MARK_BYTES = 9
# A "suffix" longer than this is no image extension: a name cut to fit drops it.
_SUFFIX_MAX_BYTES = 32


def _fit(file_name: str, tail: str, after: list[str]) -> tuple[str, str]:
    """(stem + tail, suffix) such that the stem followed by any of after (suffix and
    extensions; "{suffix}" stands for the suffix) stays within NAME_MAX bytes.

    Cut names are rare (a name of over about 230 bytes); the cut keeps the start of the stem
    and adds a hash of the whole name, so two long names with one start stay apart.
    """
    stem, suffix = stem_of(file_name), suffix_of(file_name)

    def widest(suffix: str) -> int:
        return max(len(name_bytes(ext.replace("{suffix}", suffix))) for ext in after)

    if len(name_bytes(stem + tail)) + widest(suffix) <= NAME_MAX:
        return stem + tail, suffix
    if len(name_bytes(suffix)) > _SUFFIX_MAX_BYTES:
        stem, suffix = file_name, ""
    room = NAME_MAX - widest(suffix) - len(tail) - _CUT_MARK_BYTES
    cut = stem
    while cut and len(name_bytes(cut)) > room:
        cut = cut[:-1]  # by characters: a cut never splits a UTF-8 sequence
    mark = hashlib.sha256(name_bytes(file_name)).hexdigest()[:8]
    return f"{cut}~{mark}{tail}", suffix


def _tails(content_sha256: str, job_id: str) -> list[str]:
    # The job id is unique per (path, bytes): the last resort can never be taken by another job.
    return ["", f"-{content_sha256[:8]}", f"-{content_sha256[:8]}-{job_id[:8]}"]


def plain_stem(file_name: str, *, caption_ext: str = CAPTION_EXT) -> str:
    """The stem of the first placement an image tries (its own, unless cut to fit)."""
    return _fit(file_name, "", ["{suffix}", caption_ext, RECORD_EXT])[0]


def candidate_placements(
    dest_dir: Path, file_name: str, content_sha256: str, job_id: str, *, caption_ext: str = CAPTION_EXT
) -> list[Placement]:
    """The placements to try, in order: the plain stem, then hash-suffixed ones."""
    placements = []
    for tail in _tails(content_sha256, job_id):
        stem, suffix = _fit(file_name, tail, ["{suffix}", caption_ext, RECORD_EXT])
        placements.append(
            Placement(
                image=dest_dir / f"{stem}{suffix}",
                caption=dest_dir / f"{stem}{caption_ext}",
                record=dest_dir / f"{stem}{RECORD_EXT}",
            )
        )
    return placements


def candidate_error_placements(
    dest_dir: Path, file_name: str, content_sha256: str, job_id: str
) -> list[Placement]:
    """Error placements: the image under its name, its reason in ``<name>.error.json``."""
    placements = []
    for tail in _tails(content_sha256, job_id):
        stem, suffix = _fit(file_name, tail, ["{suffix}" + ERROR_EXT])
        name = f"{stem}{suffix}"
        reason = dest_dir / f"{name}{ERROR_EXT}"
        placements.append(Placement(image=dest_dir / name, caption=reason, record=reason))
    return placements


def last_resort_error_placement(errors_root: Path, file_name: str, job_id: str) -> Placement:
    """Where an error goes when its own name cannot be written there (a file system that
    refuses some bytes or characters): the errors root, under the job id and an ASCII
    suffix, which any file system takes."""
    suffix = suffix_of(file_name)
    if not (suffix[1:].isascii() and suffix[1:].isalnum() and len(suffix) <= 16):
        suffix = ""
    name = f"{job_id}{suffix}"
    reason = errors_root / f"{name}{ERROR_EXT}"
    return Placement(image=errors_root / name, caption=reason, record=reason)


def error_dir_for(errors_root: Path, rel_parent: PurePosixPath) -> Path:
    """The errors folder of an input in rel_parent: the same sub-folder, or the errors root
    when that folder's paths would pass PATH_MAX (the record's source keeps the path)."""
    folder = errors_root.joinpath(*rel_parent.parts)
    if len(name_bytes(str(folder))) + 1 + NAME_MAX >= PATH_MAX:
        return errors_root
    return folder


def path_too_long(path: Path) -> bool:
    """Whether a path passes PATH_MAX: no call by that path can reach it."""
    return len(name_bytes(str(path))) >= PATH_MAX


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
