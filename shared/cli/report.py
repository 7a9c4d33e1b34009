"""`kcap report`: a static HTML page of a finished run that opens from disk, no server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.cli.export import add_folder_arguments
from shared.dataset import Roots, read_dataset, resolve_roots, summarize
from shared.gallery import render


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("report", help="a static HTML page: counts, score histogram, images")
    add_folder_arguments(parser)
    parser.add_argument(
        "--errors-dir", type=Path, default=None, help="errors folder, for the counts (default: as above)"
    )
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="the page (report.html)")
    parser.add_argument("--title", default="kcap report", help="the page's title")
    parser.set_defaults(handler=run)


def write_report(roots: Roots, out: Path, *, title: str = "kcap report") -> dict[str, Any]:
    """Render and write the page; the run's summary."""
    out = out.expanduser().resolve()
    dataset = read_dataset(roots)
    summary = summarize(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(dataset, summary, report_path=out, title=title), encoding="utf-8")
    return summary


def run(args: argparse.Namespace) -> int:
    roots = resolve_roots(args.output_dir, args.clip_failed_dir, args.errors_dir)
    summary = write_report(roots, args.out, title=args.title)
    counts = summary["counts"]
    print(
        f"{counts['output']} output, {counts['clip_failed']} clip failed, {counts['errors']} errors: "
        f"wrote {args.out.expanduser().resolve()}"
    )
    return 0
