"""`kcap`: one console script; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from collections.abc import Sequence

from shared.cli import export, flower, report, status, up, watch, worker
from shared.errors import EXIT_ERROR, KcapError
from shared.logs import configure_logging

log = logging.getLogger("kcap")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcap",
        description="Caption a folder of images with Kosmos-2, score with CLIP, file the results.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up.add_parsers(commands)
    watch.add_parser(commands)
    worker.add_parsers(commands)
    flower.add_parser(commands)
    status.add_parser(commands)
    export.add_parser(commands)
    report.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Log lines say which kcap process wrote them ("kcap-router"), not "MainProcess".
    multiprocessing.current_process().name = f"kcap-{args.command}"
    configure_logging(args.log_level)
    try:
        return int(args.handler(args) or 0)
    except KcapError as exc:
        # A clear sentence, no traceback soup.
        print(f"kcap: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
