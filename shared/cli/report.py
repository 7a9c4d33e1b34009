"""`kcap report`: a static HTML page of a finished run that opens from disk, no server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.cli.exits import Exit
from shared.cli.export import add_folder_arguments
from shared.report.dataset import resolve_roots
from shared.report.gallery import write_report


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("report", help="a static HTML page: counts, score histogram, images")
    add_folder_arguments(parser)
    parser.add_argument(
        "--errors-dir", type=Path, default=None, help="errors folder, for the counts (default: as above)"
    )
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="the page (report.html)")
    parser.add_argument("--title", default="kcap report", help="the page's title")
    parser.set_defaults(handler=report)


def report(args: argparse.Namespace) -> int:
    roots = resolve_roots(args.output_dir, args.clip_failed_dir, args.errors_dir)
    summary = write_report(roots, args.out, title=args.title)
    counts = summary["counts"]
    print(
        f"{counts['output']} output, {counts['clip_failed']} clip failed, {counts['errors']} errors: "
        f"wrote {args.out.expanduser().resolve()}"
    )
    return Exit.OK
