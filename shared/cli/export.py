"""`kcap export`: one CSV or JSONL row per image of a finished run, and summary.json beside it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.cli.exits import Exit
from shared.report.dataset import resolve_roots
from shared.report.export import format_summary, write_export


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("export", help="one CSV/JSONL row per image, and summary.json")
    add_folder_arguments(parser)
    parser.add_argument("--errors-dir", type=Path, default=None, help="errors folder (default: as above)")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="csv (default) or jsonl")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="export file, with summary.json beside it (default kcap-export.<format> in this folder)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an export file or summary.json already there"
    )
    parser.set_defaults(handler=export)


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """OUTPUT_DIR and --clip-failed-dir, shared with `kcap report`."""
    parser.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR", help="the finished output folder")
    parser.add_argument(
        "--clip-failed-dir",
        "--clip_failed_dir",
        dest="clip_failed_dir",
        type=Path,
        default=None,
        help="clip-failed folder (default: KCAP_CLIP_FAILED_DIR, else a sibling clip_failed/)",
    )


def export(args: argparse.Namespace) -> int:
    roots = resolve_roots(args.output_dir, args.clip_failed_dir, args.errors_dir)
    out = args.out or Path(f"kcap-export.{args.format}")
    summary = write_export(roots, out, fmt=args.format, force=args.force)
    for line in format_summary(summary):
        print(line)
    print(f"wrote        {summary['export']}")
    print(f"wrote        {summary['summary']}")
    return Exit.OK
