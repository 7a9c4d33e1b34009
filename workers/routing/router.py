"""Filing a result into storage: output, clip-failed or errors, exactly once.

Write order makes a crash at any point safe to redo: the image first, then the caption,
then the record (`.json` or `.error.json`), which marks the job done. A redelivered result
finds its own record and stops; a half-finished one is completed. Moving the input away
(move mode) is the very last step, after the record is on disk.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from shared.core.errors import ConfigError
from shared.core.messages import Result
from shared.core.naming import (
    Placement,
    candidate_error_placements,
    candidate_placements,
    inside,
    links_outside,
    safe_relpath,
    sha256_file,
    sidecar_name_refusal,
    stem_of,
)
from shared.core.outcomes import Outcome
from shared.core.records import read_json
from shared.core.settings import Settings
from shared.core.sidecar import caption_record
from shared.core.thresholds import Thresholds, outcome_for, scorer_family_of
from workers.routing.atomic import atomic_copy, atomic_write_bytes, atomic_write_json
from workers.routing.metadata import MetadataLog

log = logging.getLogger(__name__)

OUTPUT, CLIP_FAILED, ERRORS = Outcome.OUTPUT, Outcome.CLIP_FAILED, Outcome.ERRORS
# Locks for choosing names, by hash of (folder, stem): two stems rarely share one.
_PLACING_STRIPES = 256


# A decode failure of a file that was still being written is not a bad image: such results
# wait until the input has been still this long, then are filed, or dropped if it changed.
UNSETTLED_ERROR_CLASSES = frozenset({"BadImageError"})


class InputNotSettled(Exception):
    """The input of a failed decode changed too recently to call it bad; route it later."""

    def __init__(self, job_id: str, wait_s: float) -> None:
        super().__init__(f"job {job_id}: its input changed {wait_s:.1f}s too recently to be filed as bad")
        self.wait_s = wait_s


@dataclass(frozen=True)
class Routed:
    """What routing one result did. outcome is None when nothing was placed (the input
    vanished or changed: its new content has a job of its own)."""

    outcome: Outcome | None
    placement: Placement | None
    newly_placed: bool
    note: str = ""


class Router:
    """Places results under the configured roots and nowhere else."""

    def __init__(self, settings: Settings) -> None:
        input_dir, output_dir = settings.require_folders()
        if settings.errors_dir is None:  # Settings derives it from the output folder
            raise ConfigError("no errors folder: pass --errors-dir DIR or set KCAP_ERRORS_DIR")
        self.settings = settings
        self.input_dir = input_dir
        self.roots: dict[Outcome, Path] = {OUTPUT: output_dir, ERRORS: settings.errors_dir}
        if settings.clip_failed_dir is not None:
            self.roots[CLIP_FAILED] = settings.clip_failed_dir
        self.host = socket.gethostname()
        # The route worker runs many threads: choosing a free name and taking it must be one
        # step, or a.jpg and a.png routed at once would both take the stem "a". Every name a
        # job may take derives from its folder and stem, so one lock per (folder, stem)
        # suffices, and images of other stems are filed side by side (their fsyncs overlap).
        self._placing = [threading.Lock() for _ in range(_PLACING_STRIPES)]
        self.metadata = {name: MetadataLog(root) for name, root in self.roots.items() if name != ERRORS}
        # Per scorer family; warns at start when --threshold was given for another family.
        self.thresholds = Thresholds(
            settings.threshold, given_for=settings.threshold_family or scorer_family_of(settings.clip_model)
        )
        if settings.score_enabled:
            self.thresholds.check_start(settings.clip_model)

    def outcome_for(self, result: Result) -> Outcome:
        return outcome_for(ok=result.ok, score=result.score, threshold=self._threshold(result))

    def _sidecar_refusal(self, result: Result) -> str:
        return sidecar_name_refusal(
            PurePosixPath(result.rel_path).name, caption_ext=self.settings.caption_ext
        )

    def route(self, result: Result) -> Routed:
        """File one result. Raises UnsafePathError for a path that leaves the roots."""
        if result.ok and (refusal := self._sidecar_refusal(result)):
            # The producer refuses such names; a result from elsewhere is held to the same rule.
            result = dataclasses.replace(result, ok=False, error_reason=refusal, error_class="Refused")
        rel = safe_relpath(result.rel_path)
        source = inside(self.input_dir, result.rel_path)
        outcome = self.outcome_for(result)
        if outcome == ERRORS and result.error_class in UNSETTLED_ERROR_CLASSES:
            self._require_settled(source, result)
        dest_dir = self._dest_dir(outcome, rel)
        if outcome == ERRORS:
            candidates = candidate_error_placements(dest_dir, rel.name, result.content_sha256, result.job_id)
        else:
            candidates = candidate_placements(
                dest_dir,
                rel.name,
                result.content_sha256,
                result.job_id,
                caption_ext=self.settings.caption_ext,
            )
        with self._placing[hash((dest_dir, stem_of(rel.name))) % _PLACING_STRIPES]:
            placement, done = self._choose(candidates, result)
            if done is not None:
                text = str(done.get("text", self._final_text(result)))
                self._ensure_metadata(outcome, placement, result, text)
                return Routed(outcome, placement, newly_placed=False, note="already routed")
            placed, source_stat = self._place_image(source, placement.image, result, outcome)
            if not placed:
                return Routed(None, None, newly_placed=False, note="input vanished or changed")
            if outcome == ERRORS:
                atomic_write_json(placement.record, self._error_record(result, placement))
            else:
                text = self._write_caption(placement.caption, result)
                record = {**self._record(result, placement, outcome, text), **source_stat}
                atomic_write_json(placement.record, record)
                self._ensure_metadata(outcome, placement, result, text)
        if self.settings.input_mode == "move":
            self._remove_source(source, result)
        return Routed(outcome, placement, newly_placed=True)

    def _require_settled(self, source: Path, result: Result) -> None:
        """A slow writer that pauses longer than --stable-after-s gets its half-written file
        read and refused as truncated. Filing waits until the input has been still for
        --bad-image-settle-s: by then a resumed write has changed it (the copy check below
        then drops this job; the new bytes have their own) or it is truly bad."""
        try:
            changed_s_ago = time.time() - os.stat(source).st_mtime
        except OSError:
            return  # gone or unreadable: filed as it is
        wait_s = self.settings.bad_image_settle_s - changed_s_ago
        if wait_s > 0:
            raise InputNotSettled(result.job_id, wait_s)

    # -- choosing ------------------------------------------------------------
    def _dest_dir(self, outcome: Outcome, rel: PurePosixPath) -> Path:
        root = self.roots[outcome]
        if rel.parent == PurePosixPath("."):
            return root
        return inside(root, str(rel.parent / "x")).parent

    def _choose(self, candidates: list[Placement], result: Result) -> tuple[Placement, dict[str, Any] | None]:
        """The first placement that is ours or free, with its record when ours is finished."""
        for placement in candidates:
            record = read_json(placement.record)
            if record is not None:
                if record.get("job_id") == result.job_id:
                    return placement, record
                continue  # another job's: never overwrite
            if placement.image.exists() and not self._is_same_content(placement.image, result):
                continue
            return placement, None
        raise RuntimeError(f"job {result.job_id}: every candidate name is taken by another job")

    @staticmethod
    def _is_same_content(path: Path, result: Result) -> bool:
        try:
            return sha256_file(path) == result.content_sha256
        except OSError:
            return False

    # -- placing -------------------------------------------------------------
    def _place_image(
        self, source: Path, target: Path, result: Result, outcome: Outcome
    ) -> tuple[bool, dict[str, int]]:
        """Copy the input into place. (False, ...) when there is nothing (right) to place.

        The second item is the source's size and mtime when this copy verified its bytes and
        the source did not change meanwhile: it lets a restart skip the file unread.
        """
        if target.exists() and self._is_same_content(target, result):
            return True, {}  # a crash after the copy: the image is already in place
        if self._links_outside(source):
            if outcome == ERRORS:
                return True, {}  # a refused link: the reason is recorded, the link is left alone
            log.warning("job %s: %s links outside the input folder; not followed", result.job_id, source)
            return False, {}
        try:
            reader = source.open("rb")
        except OSError as exc:
            if outcome == ERRORS:
                return True, {}  # the reason is recorded even though the input cannot be read
            log.warning(
                "job %s: input %s cannot be read now (%s); a later scan takes it up again",
                result.job_id,
                result.rel_path,
                exc,
            )
            return False, {}
        with reader:
            before = _stat_of(os.fstat(reader.fileno()))
            # Errors from here on are on the destination side (disk full, read-only): the
            # route task retries them later.
            copied = atomic_copy(reader, target, expect_sha256=result.content_sha256)
            after = _stat_of(os.fstat(reader.fileno()))
        if copied != result.content_sha256:
            # The file was replaced after it was read; its new content has its own job.
            log.warning(
                "job %s: input %s changed since it was read; leaving it to its new job",
                result.job_id,
                result.rel_path,
            )
            return False, {}
        return True, (before if before == after else {})

    def _links_outside(self, source: Path) -> bool:
        return links_outside(source, self.input_dir, follow_symlinks=self.settings.follow_symlinks)

    def _remove_source(self, source: Path, result: Result) -> None:
        try:
            if sha256_file(source) == result.content_sha256:
                os.unlink(source)  # move mode: the verified copy and its record are on disk
        except FileNotFoundError:
            pass

    # -- records -------------------------------------------------------------
    def _final_text(self, result: Result) -> str:
        return f"{self.settings.caption_prefix}{result.caption}{self.settings.caption_suffix}"

    def _write_caption(self, path: Path, result: Result) -> str:
        """Write the caption file, honouring --existing for a file kcap did not write."""
        new = self._final_text(result)
        try:
            existing = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            existing = None
        mode = self.settings.existing
        if existing is None or mode == "overwrite" or existing == new:
            text = new
        elif mode == "skip":
            return existing  # kept as it is (the producer normally skips such images)
        elif mode == "append":
            # A retry after a crash finds its own text already appended.
            text = existing if existing.endswith(new) else f"{existing} {new}"
        else:  # prepend
            text = existing if existing.startswith(new) else f"{new} {existing}"
        # The caption and nothing else (no newline added), as the original script wrote it.
        atomic_write_bytes(path, text.encode("utf-8"))
        return text

    def _ensure_metadata(self, outcome: Outcome, placement: Placement, result: Result, text: str) -> None:
        if outcome not in self.metadata:
            return
        root = self.roots[outcome]
        self.metadata[outcome].ensure(
            result.job_id,
            {
                "file_name": placement.image.relative_to(root).as_posix(),
                "text": text,
                "clip_score": result.score,
                "entities": result.entities,
            },
        )

    def _record(self, result: Result, placement: Placement, outcome: Outcome, text: str) -> dict[str, Any]:
        return caption_record(
            result,
            image=placement.image.name,
            outcome=outcome,
            text=text,
            threshold=self._threshold(result),
            filed_by=self.host,
        )

    def _threshold(self, result: Result) -> float | None:
        """The threshold this result's score was compared with (None: it was not scored)."""
        if not self.settings.score_enabled or result.score is None:
            return None
        return self.thresholds.for_family(result.score_family)

    def _error_record(self, result: Result, placement: Placement) -> dict[str, Any]:
        return {
            "job_id": result.job_id,
            "source": result.rel_path,
            "image": placement.image.name if placement.image.exists() else None,
            "reason": result.error_reason,
            "error_class": result.error_class,
            "content_sha256": result.content_sha256,
            "worker": result.worker,
            "router": self.host,
            "time": time.time(),
        }


def _stat_of(stat: os.stat_result) -> dict[str, int]:
    return {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
