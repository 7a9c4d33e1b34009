"""Walking the input folder: which files are candidates, and which are already done."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from shared.core.imagetypes import looks_like_image
from shared.core.naming import (
    RECORD_EXT,
    candidate_error_placements,
    candidate_placements,
    is_ignored_name,
    stem_of,
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
        if path.is_dir() or not (path.is_file() or path.is_symlink()):
            return None
        if not looks_like_image(path):
            return None
        return rel.as_posix()

    def walk(self, start: Path | None = None) -> Iterator[Path]:
        """Every candidate file under start (default: the root), sorted for a predictable order."""
        for dirpath, dirnames, filenames in os.walk(start or self.root, followlinks=False):
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
        if settings.existing == "skip" and first.caption.exists() and not first.record.exists():
            # A caption kcap did not write (the original script's output, or a hand-made
            # one): skipped, as the original script skipped images already captioned.
            return first.caption
    if settings.errors_dir is not None:
        errors = settings.errors_dir.joinpath(*parent_parts)
        for placement in candidate_error_placements(errors, name, content_sha256, job_id):
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
    stem = stem_of(name)
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
