"""A finished run read back from disk: one plain row per image, and summary statistics.

The on-disk contract is what the route task writes: in the output and clip-failed roots an
image beside ``<stem>.json`` (its record) and ``<stem>.txt``; in the errors root ``<name>``
beside ``<name>.error.json``. Sub-folders are preserved. Records from older or newer kcap
versions are read field by field: a missing or odd field becomes None, never a crash.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core.errors import ConfigError
from shared.core.messages import Entity
from shared.core.naming import ERROR_EXT, IMAGE_SUFFIXES, RECORD_EXT, TEMP_PREFIX, shown
from shared.core.outcomes import OUTCOMES, Outcome
from shared.core.records import read_json
from shared.core.settings import Settings

log = logging.getLogger(__name__)

OUTPUT, CLIP_FAILED, ERRORS = Outcome.OUTPUT, Outcome.CLIP_FAILED, Outcome.ERRORS


@dataclass(frozen=True)
class Row:
    """One routed image, whatever root it landed in."""

    root: Outcome
    # The image's path relative to its root, with forward slashes. Like every text here, shown
    # for people: a name byte that is not UTF-8 is a \xNN escape (naming.shown).
    path: str
    record_path: Path
    image_path: Path | None  # None when the image is not on disk (an unreadable input)
    job_id: str | None = None
    source: str | None = None
    caption: str | None = None  # the final text (the record's "text", else its "caption")
    clip_score: float | None = None  # the score compared with the threshold
    clip_score_method: str | None = None  # which statistic that is (original, sentence-chunks, sigmoid)
    clip_score_original: float | None = None
    clip_score_sentence_chunks: float | None = None
    clipscore: float | None = None
    threshold: float | None = None
    caption_model: str | None = None
    caption_family: str | None = None
    clip_model: str | None = None
    clip_score_family: str | None = None
    width: int | None = None
    height: int | None = None
    entities: list[Entity] = field(default_factory=list)
    captions: int = 0  # how many prompt/caption pairs the record holds ("captions")
    error: str | None = None
    error_class: str | None = None


@dataclass(frozen=True)
class Roots:
    output: Path
    clip_failed: Path | None
    errors: Path | None

    def items(self) -> list[tuple[Outcome, Path]]:
        pairs = [(OUTPUT, self.output), (CLIP_FAILED, self.clip_failed), (ERRORS, self.errors)]
        return [(name, path) for name, path in pairs if path is not None]


@dataclass(frozen=True)
class Dataset:
    roots: Roots
    rows: list[Row]
    unreadable: list[Path]  # record files that are not a JSON object with a job_id

    def by_root(self, root: Outcome) -> list[Row]:
        return [row for row in self.rows if row.root == root]


def resolve_roots(
    output_dir: Path, clip_failed_dir: Path | None = None, errors_dir: Path | None = None
) -> Roots:
    """The folders to read: flag, else KCAP_CLIP_FAILED_DIR / KCAP_ERRORS_DIR, else siblings.

    The sibling defaults (``clip_failed`` and ``errors`` beside the output folder) are used
    only when they exist; a run without a clip-failed folder did no scoring.
    """
    output = Path(output_dir).expanduser().resolve()
    if not output.is_dir():
        raise ConfigError(f"no output folder at {output}: pass the folder kcap wrote its results to")
    settings = Settings.build(output_dir=output, clip_failed_dir=clip_failed_dir, errors_dir=errors_dir)
    clip_failed = settings.clip_failed_dir
    if clip_failed is None and (output.parent / CLIP_FAILED).is_dir():
        clip_failed = output.parent / CLIP_FAILED
    errors = settings.errors_dir or output.parent / ERRORS
    return Roots(output=output, clip_failed=clip_failed, errors=errors)


def read_dataset(roots: Roots) -> Dataset:
    rows: list[Row] = []
    unreadable: list[Path] = []
    for name, root in roots.items():
        if not root.is_dir():
            continue
        for record_path in _record_files(root, errors=name == ERRORS):
            record = read_json(record_path)
            if record is None or not isinstance(record.get("job_id"), str):
                log.warning("%s is not a kcap record; left out", record_path)
                unreadable.append(record_path)
                continue
            rows.append(_row(name, root, record_path, record))
    rows.sort(key=lambda row: (OUTCOMES.index(row.root), row.path))
    return Dataset(roots=roots, rows=rows, unreadable=unreadable)


def _record_files(root: Path, *, errors: bool) -> Iterable[Path]:
    pattern = f"*{ERROR_EXT}" if errors else f"*{RECORD_EXT}"
    for path in sorted(root.rglob(pattern)):
        rel_parts = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel_parts) or path.name.startswith(TEMP_PREFIX):
            continue  # temp files of an atomic write, and hidden folders
        if not errors and path.name.endswith(ERROR_EXT):
            continue
        if path.is_file():
            yield path


def _row(root_name: Outcome, root: Path, record_path: Path, record: Mapping[str, Any]) -> Row:
    if root_name == ERRORS:
        image = record_path.with_name(record_path.name[: -len(ERROR_EXT)])
        image_path = image if image.is_file() else None
        return Row(
            root=root_name,
            path=shown(image.relative_to(root).as_posix()),
            record_path=record_path,
            image_path=image_path,
            job_id=_str(record.get("job_id")),
            source=_str(record.get("source")),
            error=_str(record.get("reason")),
            error_class=_str(record.get("error_class")),
        )
    image_path = _find_image(record_path, record.get("image"))
    shown_path = image_path or record_path.with_suffix("")
    captions = record.get("captions")
    return Row(
        root=root_name,
        path=shown(shown_path.relative_to(root).as_posix()),
        record_path=record_path,
        image_path=image_path,
        job_id=_str(record.get("job_id")),
        source=_str(record.get("source")),
        caption=_str(record.get("text")) if "text" in record else _str(record.get("caption")),
        clip_score=_number(record.get("clip_score")),
        clip_score_method=_str(record.get("clip_score_method")),
        clip_score_original=_number(record.get("clip_score_original")),
        clip_score_sentence_chunks=_number(record.get("clip_score_sentence_chunks")),
        clipscore=_number(record.get("clipscore")),
        threshold=_number(record.get("threshold")),
        caption_model=_str(record.get("caption_model")),
        caption_family=_str(record.get("caption_family")),
        clip_model=_str(record.get("clip_model")),
        clip_score_family=_str(record.get("clip_score_family")),
        width=_int(record.get("width")),
        height=_int(record.get("height")),
        entities=_entities(record.get("entities")),
        captions=len(captions) if isinstance(captions, list) else 0,
    )


def _find_image(record_path: Path, name: object) -> Path | None:
    """The record's "image" beside it; else any image file with the record's stem."""
    if isinstance(name, str) and name and "/" not in name and (os.sep == "/" or "\\" not in name):
        candidate = record_path.with_name(name)
        if candidate.is_file():
            return candidate
    stem = record_path.name[: -len(RECORD_EXT)]
    for candidate in sorted(record_path.parent.glob(f"{stem}.*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
            return candidate
    return None


def _entities(value: object) -> list[Entity]:
    if not isinstance(value, list):
        return []
    entities = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        boxes = [box for box in map(_box, _list(item.get("boxes"))) if box is not None]
        boxes_px = [box for box in map(_box_px, _list(item.get("boxes_px"))) if box is not None]
        entities.append(
            Entity(
                phrase=str(item.get("phrase") or ""),
                start=_int(item.get("start")) or 0,
                end=_int(item.get("end")) or 0,
                boxes=boxes,
                boxes_px=boxes_px,
            )
        )
    return entities


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _box(value: object) -> list[float] | None:
    """[x0, y0, x1, y1] clamped to 0..1, or None for anything that is not a box."""
    coords = _box_px(value)
    if coords is None:
        return None
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in coords)
    return [x0, y0, x1, y1] if x1 > x0 and y1 > y0 else None


def _box_px(value: object) -> list[float] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    coords = [_number(v) for v in value]
    return [v for v in coords if v is not None] if all(v is not None for v in coords) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number > 0 else None


def _str(value: object) -> str | None:
    return shown(value) if isinstance(value, str) else None


# -- statistics ----------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default), p in 0..100."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def score_stats(scores: list[float], threshold: float | None) -> dict[str, Any]:
    values = sorted(scores)
    stats: dict[str, Any] = {"count": len(values), "threshold": threshold}
    if not values:
        return {**stats, **dict.fromkeys(("min", "max", "mean", "median", "p10", "p90"))}
    return {
        **stats,
        "min": values[0],
        "max": values[-1],
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
    }


def scored(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.root != ERRORS and row.clip_score is not None]


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Counts and score statistics of the whole run (not a running figure)."""
    counts = {name.value: len(dataset.by_root(name)) for name in OUTCOMES}
    thresholds = Counter(row.threshold for row in dataset.rows if row.threshold is not None)
    threshold = thresholds.most_common(1)[0][0] if thresholds else None
    if len(thresholds) > 1:
        log.warning("records disagree on the threshold (%s); reporting %s", sorted(thresholds), threshold)
    scores = [row.clip_score for row in scored(dataset.rows) if row.clip_score is not None]
    clipscores = [row.clipscore for row in scored(dataset.rows) if row.clipscore is not None]
    judged = counts[OUTPUT] + counts[CLIP_FAILED]
    return {
        "folders": {name: shown(str(path)) for name, path in dataset.roots.items()},
        "counts": {**counts, "total": sum(counts.values()), "unreadable_records": len(dataset.unreadable)},
        "pass_rate": counts[OUTPUT] / judged if judged and dataset.roots.clip_failed else None,
        "clip_score": score_stats(scores, threshold),
        "clipscore": score_stats(clipscores, None),
        "thresholds_seen": sorted(thresholds),
    }


def histogram(values: list[float], *, bins: int, low: float, high: float) -> list[int]:
    """Counts of values in `bins` equal bins over [low, high]; the last bin includes high."""
    counts = [0] * bins
    width = (high - low) / bins
    for value in values:
        index = int((value - low) / width) if width > 0 else 0
        counts[min(max(index, 0), bins - 1)] += 1
    return counts
