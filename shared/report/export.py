"""A finished run as one CSV or JSONL row per image, and summary.json beside it.

This replaces the original script's result.json, which held a running average written
mid-list: the summary here is computed once over every record on disk.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from shared.core.errors import ConfigError
from shared.core.naming import resolves_inside
from shared.report.dataset import Dataset, Roots, Row, read_dataset, summarize

COLUMNS = (
    "path",
    "root",
    "caption",
    "clip_score",
    "clip_score_method",
    "clip_score_original",
    "clip_score_sentence_chunks",
    "clipscore",
    "threshold",
    "caption_model",
    "caption_family",
    "clip_model",
    "clip_score_family",
    "width",
    "height",
    "entities",
    "job_id",
    "source",
    "error",
    "error_class",
)
SUMMARY_NAME = "summary.json"


def row_values(row: Row) -> dict[str, Any]:
    """Each column is the Row field of its name; entities are counted."""
    values = {column: getattr(row, column) for column in COLUMNS}
    values["entities"] = len(row.entities)
    return values


def write_csv(dataset: Dataset, out: Path) -> None:
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in dataset.rows:
            writer.writerow({k: "" if v is None else v for k, v in row_values(row).items()})


def write_jsonl(dataset: Dataset, out: Path) -> None:
    with out.open("w", encoding="utf-8") as handle:
        for row in dataset.rows:
            handle.write(json.dumps(row_values(row), ensure_ascii=False) + "\n")


def write_export(roots: Roots, out: Path, *, fmt: str, force: bool = False) -> dict[str, Any]:
    """Write the export and summary.json beside it; the summary, with both paths.

    An export or a summary.json already there (an earlier run's, or someone else's file of
    that common name) is left alone unless force is set."""
    out = out.expanduser().resolve()
    summary_path = out.with_name(SUMMARY_NAME)
    for name, root in roots.items():
        if resolves_inside(summary_path, root):
            # A summary.json in a results folder would read as a record on the next run.
            raise ConfigError(f"--out {out} lies inside the {name} folder {root}: pass a path outside it")
    taken = [str(path) for path in (out, summary_path) if path.exists()]
    if taken and not force:
        raise ConfigError(
            f"{' and '.join(taken)} already exist{'s' if len(taken) == 1 else ''}: pass --out with "
            "a path in another folder (summary.json is written beside it), or --force to replace"
        )
    dataset = read_dataset(roots)
    summary = summarize(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        write_csv(dataset, out)
    else:
        write_jsonl(dataset, out)
    summary = {**summary, "export": str(out), "format": fmt}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {**summary, "summary": str(summary_path)}


def format_summary(summary: dict[str, Any]) -> list[str]:
    counts = summary["counts"]
    stats = summary["clip_score"]
    lines = [
        f"output       {counts['output']}",
        f"clip failed  {counts['clip_failed']}",
        f"errors       {counts['errors']}",
        f"total        {counts['total']}",
    ]
    if counts["unreadable_records"]:
        lines.append(f"unreadable   {counts['unreadable_records']} record file(s) left out")
    if summary.get("pass_rate") is not None:
        lines.append(f"pass rate    {summary['pass_rate']:.1%}")
    if stats["count"]:
        lines.append(
            "clip score   n={count} min {min:.2f} p10 {p10:.2f} median {median:.2f} mean {mean:.2f} "
            "p90 {p90:.2f} max {max:.2f}".format(**stats)
        )
    else:
        lines.append("clip score   no scored images")
    if stats["threshold"] is not None:
        lines.append(f"threshold    {stats['threshold']:g}")
    return lines
