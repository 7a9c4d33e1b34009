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

from shared.core.errors import ConfigError, UnsafePathError
from shared.core.messages import Result
from shared.core.naming import (
    Placement,
    candidate_error_placements,
    candidate_placements,
    error_dir_for,
    inside,
    is_utf8,
    last_resort_error_placement,
    links_outside,
    resolves_inside,
    safe_relpath,
    sha256_file,
    shown,
    sidecar_name_refusal,
    stem_of,
)
from shared.core.outcomes import Outcome
from shared.core.records import read_json
from shared.core.settings import Settings
from shared.core.sidecar import caption_record
from shared.core.thresholds import Thresholds, outcome_for, scorer_family_of
from workers.routing.atomic import atomic_copy, atomic_write_json, remove_temps_of
from workers.routing.lasting import cannot_file, heals_by_waiting
from workers.routing.metadata import MetadataLog
from workers.routing.sidecars import error_record, write_caption

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
        # job may take, in any root, derives from its sub-folder and stem, so one lock per
        # (sub-folder, stem) suffices, and images of other stems are filed side by side
        # (their fsyncs overlap).
        self._placing = [threading.Lock() for _ in range(_PLACING_STRIPES)]
        self.metadata = {name: MetadataLog(root) for name, root in self.roots.items() if name != ERRORS}
        # Roots that cannot hold an input (the input folder is not inside them): only there
        # may kcap remove a partial placement of its own (_filed_elsewhere).
        self._no_inputs = {
            name for name, root in self.roots.items() if not resolves_inside(self.input_dir, root)
        }
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
        """File one result. Raises UnsafePathError for a path that leaves the roots (or that
        not even the errors root takes), and OSError only for a failure that waiting may mend
        (the route task retries it).

        A name or path that the destination refuses for good is filed as an error with the
        reason; an error that cannot be filed under its own name goes to the errors root
        under its job id (naming.last_resort_error_placement). Neither is ever retried.
        """
        if result.ok and (refusal := self._sidecar_refusal(result)):
            # The producer refuses such names; a result from elsewhere is held to the same rule.
            result = dataclasses.replace(result, ok=False, error_reason=refusal, error_class="Refused")
        while True:  # at most twice: as it is, then as an error
            try:
                return self._file(result)
            except OSError as exc:
                if heals_by_waiting(exc):
                    raise
                failure = exc
            if self.outcome_for(result) == ERRORS:
                break
            result = cannot_file(result, failure)
        log.error(
            "job %s: cannot file %s as an error under its own name (%s); filing it under its job id",
            result.job_id,
            shown(result.rel_path),
            failure,
        )
        try:
            return self._file(result, last_resort=True)
        except OSError as exc:
            if heals_by_waiting(exc):
                raise
            # Even the errors root refuses it: a path that can never be placed, which the
            # route task sets aside (never retries), as it does a path out of the roots.
            raise UnsafePathError(f"{shown(result.rel_path)!r} cannot be filed anywhere: {exc}") from exc

    def _file(self, result: Result, *, last_resort: bool = False) -> Routed:
        rel = safe_relpath(result.rel_path)
        source = inside(self.input_dir, result.rel_path)
        outcome = ERRORS if last_resort else self.outcome_for(result)
        if outcome == ERRORS and result.error_class in UNSETTLED_ERROR_CLASSES:
            self._require_settled(source, result)
        if last_resort:
            candidates = [last_resort_error_placement(self.roots[ERRORS], rel.name, result.job_id)]
        else:
            candidates = self._candidates(outcome, rel, result)
        # By the input's folder and stem, not the destination's: one job's filings in the
        # three folders take one lock (see _filed_elsewhere).
        with self._placing[hash((rel.parent, stem_of(rel.name))) % _PLACING_STRIPES]:
            if (elsewhere := self._filed_elsewhere(outcome, rel, result)) is not None:
                return elsewhere
            placement, done = self._choose(candidates, result)
            if done is not None:
                text = str(done.get("text", self._final_text(result)))
                self._ensure_metadata(outcome, placement, result, text)
                return Routed(outcome, placement, newly_placed=False, note="already routed")
            placed, source_stat = self._place_image(source, placement.image, result, outcome)
            if not placed:
                return Routed(None, None, newly_placed=False, note="input vanished or changed")
            if outcome == ERRORS:
                atomic_write_json(placement.record, error_record(result, placement, router=self.host))
            else:
                text = write_caption(
                    placement.caption, self._final_text(result), existing=self.settings.existing
                )
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
        folder = inside(root, str(rel.parent / "x")).parent
        return error_dir_for(root, rel.parent) if outcome == ERRORS else folder

    def _candidates(self, outcome: Outcome, rel: PurePosixPath, result: Result) -> list[Placement]:
        dest_dir = self._dest_dir(outcome, rel)
        if outcome == ERRORS:
            return candidate_error_placements(dest_dir, rel.name, result.content_sha256, result.job_id)
        return candidate_placements(
            dest_dir, rel.name, result.content_sha256, result.job_id, caption_ext=self.settings.caption_ext
        )

    def _filed_elsewhere(self, outcome: Outcome, rel: PurePosixPath, result: Result) -> Routed | None:
        """A job is filed in one folder only. Its finished placement in another folder stands
        (an error for a result the route worker gave up on after it was filed, or a second
        result of the job that scored otherwise, is not filed again). Its partial placements
        in other folders (the image, perhaps the caption, but no record: a filing the route
        worker died in) are removed first, so the input never sits in two folders."""
        finished: tuple[Outcome, Placement, dict[str, Any]] | None = None
        for other in self.roots:
            if other == outcome:
                continue
            try:
                for placement in self._candidates(other, rel, result):
                    record = read_json(placement.record)
                    if record is None and other in self._no_inputs and self._is_ours(placement.image, result):
                        self._remove_partial(placement, result)
                    elif record is not None and record.get("job_id") == result.job_id:
                        finished = (other, placement, record)
            except OSError as exc:
                if heals_by_waiting(exc):
                    raise
                continue  # no name there can be reached (a path past PATH_MAX): nothing filed there
        if finished is None:
            return None
        other, placement, record = finished
        self._ensure_metadata(other, placement, result, str(record.get("text", self._final_text(result))))
        return Routed(other, placement, newly_placed=False, note=f"already routed to {other}")

    def remove_cut_short(self, result: Result) -> None:
        """Remove the temp files of this job's writes that the route worker died in (its
        filing is known to have died: the sweep would take them only after 10 minutes).
        Such a job is filed alone, so none of them is a write in progress in this process."""
        rel = safe_relpath(result.rel_path)
        targets = [
            path
            for outcome in self.roots
            for placement in self._candidates(outcome, rel, result)
            for path in (placement.image, placement.caption, placement.record)
        ]
        for temp in remove_temps_of(targets):
            log.info("job %s: removed %s, left by a filing of it that never finished", result.job_id, temp)

    def _is_ours(self, image: Path, result: Result) -> bool:
        return image.is_file() and not image.is_symlink() and self._is_same_content(image, result)

    def _remove_partial(self, placement: Placement, result: Result) -> None:
        """kcap never deletes an input: this is its own copy of the job's image (same bytes,
        in a folder no input lives in) whose record was never written, and the caption it
        wrote beside it. A caption of other text (kept or extended by --existing) stays."""
        log.warning(
            "job %s: removing %s, left by a filing of it that never finished", result.job_id, placement.image
        )
        placement.image.unlink(missing_ok=True)
        if placement.caption == placement.record or not result.caption:
            return  # an error placement has no caption; an error result no text to know it by
        try:
            if placement.caption.read_text(encoding="utf-8") == self._final_text(result):
                placement.caption.unlink()
        except (FileNotFoundError, UnicodeDecodeError):
            pass

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
        try:
            links_out = self._links_outside(source)
            reader = None if links_out else source.open("rb")
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
        if reader is None:
            if outcome == ERRORS:
                return True, {}  # a refused link: the reason is recorded, the link is left alone
            log.warning("job %s: %s links outside the input folder; not followed", result.job_id, source)
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
        except OSError as exc:  # filed all the same; the input stays where it is
            log.warning("job %s: filed, but its input stays in place: %s", result.job_id, exc)

    # -- records -------------------------------------------------------------
    def _final_text(self, result: Result) -> str:
        return f"{self.settings.caption_prefix}{result.caption}{self.settings.caption_suffix}"

    def _ensure_metadata(self, outcome: Outcome, placement: Placement, result: Result, text: str) -> None:
        if outcome not in self.metadata:
            return
        root = self.roots[outcome]
        if not is_utf8(placement.image.name):
            # JSON readers outside Python (pyarrow, so Hugging Face datasets) refuse a name
            # that is not UTF-8, and one such line would stop them reading the whole file.
            log.warning(
                "job %s: %s is not a UTF-8 name, so it has no line in %s (its record holds its caption)",
                result.job_id,
                shown(placement.image.name),
                self.metadata[outcome].path,
            )
            return

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
        return self.thresholds.applied(result, scoring=self.settings.score_enabled)


def _stat_of(stat: os.stat_result) -> dict[str, int]:
    return {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
