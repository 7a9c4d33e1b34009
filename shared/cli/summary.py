"""What `kcap run` prints when it is done, and `kcap up` when it is stopped: what became of this
run's images, why the unreadable ones were refused, where the logs are, how to see the report,
and a hint when every image fell on one side of the threshold (a threshold that suits other
models, not a broken run)."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.cli.progress import Progress
from shared.core.naming import ERROR_EXT, TEMP_PREFIX
from shared.core.outcomes import OUTCOMES, Outcome
from shared.core.settings import Settings
from shared.core.thresholds import Thresholds, scorer_family_of

# The error kinds listed, most frequent first; the rest are counted together.
SHOWN_KINDS = 5
# Error records read for their kinds: enough to name them, bounded on a huge errors folder.
READ_ERROR_RECORDS = 2000
_LABELS = {Outcome.OUTPUT: "output", Outcome.CLIP_FAILED: "clip-failed", Outcome.ERRORS: "errors"}


@dataclass(frozen=True)
class ErrorKind:
    count: int
    example: str  # one reason of this kind, as the .error.json says it


@dataclass(frozen=True)
class RunSummary:
    counts: Mapping[Outcome, int]  # routed during this run
    errors: Mapping[str, ErrorKind] = field(default_factory=dict)  # by error class


def error_kinds(errors_dir: Path | None, *, since: float) -> dict[str, ErrorKind]:
    """This run's error records (written since `since`, epoch seconds) by error class."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    if errors_dir is None or not errors_dir.is_dir():
        return {}
    read = 0
    for path in errors_dir.rglob(f"*{ERROR_EXT}"):
        if read >= READ_ERROR_RECORDS:
            break
        try:
            if path.name.startswith(TEMP_PREFIX) or path.stat().st_mtime < since:
                continue
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        read += 1
        kind = str(record.get("error_class") or "error")
        counts[kind] += 1
        examples.setdefault(kind, str(record.get("reason") or ""))
    return {kind: ErrorKind(count, examples[kind]) for kind, count in counts.most_common()}


def threshold_hint(settings: Settings, counts: Mapping[Outcome, int]) -> str | None:
    """A sentence when every scored image of the run fell on one side of the threshold."""
    passed, failed = counts.get(Outcome.OUTPUT, 0), counts.get(Outcome.CLIP_FAILED, 0)
    if not settings.score_enabled or (passed and failed) or not (passed or failed):
        return None
    family = scorer_family_of(settings.clip_model)
    thresholds = Thresholds(settings.threshold, given_for=settings.threshold_family or family)
    threshold = thresholds.for_family(family)
    side = "below" if failed else "at or above"
    return (
        f"every scored image ({passed + failed}) scored {side} the threshold {threshold:g} ({family}): "
        f"see the scores in the report, then set --threshold"
    )


def summary_lines(
    settings: Settings,
    summary: RunSummary,
    *,
    command: str,
    logs: Path,
    stats: Mapping[str, int] | None = None,
) -> list[str]:
    counts = summary.counts
    routed = sum(counts.values())
    head = f"{command}: {routed} image{'s' if routed != 1 else ''} filed"
    skipped = (stats or {}).get("done", 0)
    if skipped:
        head += f" ({skipped} already done before, skipped)"
    lines = [head]
    folders = {
        Outcome.OUTPUT: settings.output_dir,
        Outcome.CLIP_FAILED: settings.clip_failed_dir,
        Outcome.ERRORS: settings.errors_dir,
    }
    for outcome in OUTCOMES:
        folder = folders[outcome]
        if folder is not None:
            lines.append(f"  {_LABELS[outcome]:<12}{counts.get(outcome, 0):>7}  {folder}")
    kinds = list(summary.errors.items())
    for kind, found in kinds[:SHOWN_KINDS]:
        lines.append(f"    {found.count} {kind}: {found.example}")
    if len(kinds) > SHOWN_KINDS:
        rest = sum(found.count for _, found in kinds[SHOWN_KINDS:])
        lines.append(f"    {rest} of {len(kinds) - SHOWN_KINDS} other kinds (the .error.json files say why)")
    unread = counts.get(Outcome.ERRORS, 0) - sum(found.count for _, found in kinds)
    if kinds and unread > 0:
        lines.append(f"    {unread} more not read here (the .error.json files say why)")
    hint = threshold_hint(settings, counts)
    if hint:
        lines.append(f"  hint: {hint}")
    lines.append(f"  logs:   {logs}")
    if settings.output_dir is not None:
        lines.append(f"  report: {report_command(settings)}")
    return lines


def report_command(settings: Settings) -> str:
    """The `kcap report` line for these folders; the page lands beside the output folder."""
    assert settings.output_dir is not None
    parts = ["kcap", "report", str(settings.output_dir)]
    if settings.clip_failed_dir is not None:
        parts += ["--clip-failed-dir", str(settings.clip_failed_dir)]
    if settings.errors_dir is not None:
        parts += ["--errors-dir", str(settings.errors_dir)]
    parts += ["--out", str(settings.output_dir.parent / "report.html")]
    return " ".join(shlex.quote(part) for part in parts)


def print_summary(
    settings: Settings, progress: Progress, *, command: str, stats: Mapping[str, int] | None = None
) -> None:
    """Print the summary of the run that progress showed (call it after progress.close())."""
    counts, logs = progress.run_counts(), progress.log_dir
    if counts is None:  # the broker could not be read at the end: the folders say what happened
        print(f"{command}: stopped; the counts could not be read; logs: {logs}", flush=True)
        return
    errors = error_kinds(settings.errors_dir, since=progress.started_at) if counts.get(Outcome.ERRORS) else {}
    summary = RunSummary(counts=counts, errors=errors)
    print("\n".join(summary_lines(settings, summary, command=command, logs=logs, stats=stats)), flush=True)
