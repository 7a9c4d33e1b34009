"""Walking the input folder: which files are candidates, and which are already done."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from shared.core.errors import UnsafePathError
from shared.core.imagetypes import looks_like_image
from shared.core.naming import (
    IMAGE_SUFFIXES,
    RECORD_EXT,
    candidate_error_placements,
    candidate_placements,
    error_dir_for,
    is_ignored_name,
    last_resort_error_placement,
    path_too_long,
    plain_stem,
    safe_relpath,
    shown,
    suffix_of,
)
from shared.core.records import read_json, record_job_id
from shared.core.settings import Settings

log = logging.getLogger(__name__)


class InputFilter:
    """Decides whether a path under the input root is an input at all."""

    def __init__(self, settings: Settings) -> None:
        input_dir, _ = settings.require_folders()
        self.root = input_dir
        # Output folders may live inside the input folder; never treat results as inputs.
        self.excluded = [
            p
            for p in (settings.output_dir, settings.clip_failed_dir, settings.errors_dir, settings.state_dir)
            if p is not None
        ]
        self.recursive = settings.recursive
        self._warned: set[Path] = set()  # paths warned about once already

    def relative(self, path: Path) -> str | None:
        """The POSIX path relative to the root, or None when path is not an input."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        if not rel.parts or any(is_ignored_name(part) for part in rel.parts):
            return None
        if not self.recursive and len(rel.parts) > 1:
            return None
        if any(path == ex or ex in path.parents for ex in self.excluded):
            return None
        try:
            safe_relpath(rel.as_posix())
        except UnsafePathError as exc:
            # The route worker would refuse it: never send it (nor claim it, which would
            # send it again at every reconcile). No POSIX name leads here today.
            self._warn_once(path, f"{shown(str(path))} is not taken: {exc}")
            return None
        if path_too_long(path):
            # Nothing reaches it by its path, so it is neither looked at nor read: an image
            # by its name is refused into errors with the reason (producer.enqueue).
            return rel.as_posix() if suffix_of(path.name).lower() in IMAGE_SUFFIXES else None
        if path.is_dir() or not (path.is_file() or path.is_symlink()):
            return None
        if not looks_like_image(path):
            return None
        return rel.as_posix()

    def _warn_once(self, path: Path, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("%s", message)

    def walk(self, start: Path | None = None) -> Iterator[Path]:
        """Every candidate file under start (default: the root), sorted for a predictable order.

        Folders are walked by descriptor (os.fwalk), so files deeper than PATH_MAX are found
        too; a folder that cannot be listed is named in a warning, never passed over silently.
        """
        top = start or self.root
        try:
            for dirpath, dirnames, filenames, _fd in os.fwalk(
                top, onerror=self._unlistable, follow_symlinks=False
            ):
                here = Path(dirpath)
                dirnames[:] = sorted(
                    d for d in dirnames if not is_ignored_name(d) and (here / d) not in self.excluded
                )
                if not self.recursive:
                    dirnames[:] = []
                for name in sorted(filenames):
                    path = here / name
                    if self.relative(path) is not None:
                        yield path
        except OSError as exc:  # the folder itself went, or cannot be read: the next scan retries
            self._unlistable(exc, under=top)

    def _unlistable(self, exc: OSError, *, under: Path | None = None) -> None:
        # os.fwalk names only the folder's own name (it opens it by descriptor).
        folder = shown(str(exc.filename))
        self._warn_once(
            Path(str(exc.filename)),
            f"cannot list the folder {folder} under {shown(str(under or self.root))} ({exc.strerror}); "
            "the images in it are not captioned until it can be read",
        )


def find_done(settings: Settings, rel_path: str, content_sha256: str, job_id: str) -> Path | None:
    """The record of a job already routed (in output, clip-failed or errors), if any."""
    parent_parts = rel_path.split("/")[:-1]
    name = rel_path.split("/")[-1]
    for root in (settings.output_dir, settings.clip_failed_dir):
        if root is None:
            continue
        placements = candidate_placements(
            root.joinpath(*parent_parts), name, content_sha256, job_id, caption_ext=settings.caption_ext
        )
        for placement in placements:
            if record_job_id(placement.record) == job_id:
                return placement.record
        first = placements[0]
        # os.path.exists: False, not an error, for a path over PATH_MAX.
        if settings.existing == "skip" and os.path.exists(first.caption) and not os.path.exists(first.record):
            # A caption kcap did not write (the original script's output, or a hand-made
            # one): skipped, as the original script skipped images already captioned.
            return first.caption
    if settings.errors_dir is not None:
        errors = error_dir_for(settings.errors_dir, PurePosixPath(*parent_parts))
        placements = [
            *candidate_error_placements(errors, name, content_sha256, job_id),
            last_resort_error_placement(settings.errors_dir, name, job_id),
        ]
        for placement in placements:
            if record_job_id(placement.record) == job_id:
                return placement.record
    return None


def find_done_by_stat(settings: Settings, rel_path: str, size: int, mtime_ns: int) -> Path | None:
    """A record at the plain name for this very file (same source, size and mtime), if any.

    Lets a restart over a large done backlog skip reading and hashing every input. A file
    rewritten with the same size and its mtime set back is taken as unchanged, as rsync does.
    """
    parent_parts = rel_path.split("/")[:-1]
    name = rel_path.split("/")[-1]
    stem = plain_stem(name, caption_ext=settings.caption_ext)
    for root in (settings.output_dir, settings.clip_failed_dir):
        if root is None:
            continue
        record = read_json(root.joinpath(*parent_parts, f"{stem}{RECORD_EXT}"))
        if (
            record is not None
            and record.get("source") == rel_path
            and record.get("source_size") == size
            and record.get("source_mtime_ns") == mtime_ns
        ):
            return root.joinpath(*parent_parts, f"{stem}{RECORD_EXT}")
    return None
