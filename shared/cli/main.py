"""`kcap`: one console script; each subcommand lives in its own module, named after it.

The CLI is the top floor: it composes the producer and the workers and nothing imports it.
Each handler returns an Exit (shared.cli.exits); a KcapError becomes one sentence on stderr
and Exit.ERROR, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from collections.abc import Sequence

from shared.cli import demo, export, flower, report, router, run, shards, status, up, watch, worker
from shared.cli.exits import Exit
from shared.core.errors import KcapError
from shared.core.logs import configure_logging

log = logging.getLogger("kcap")

COMMANDS = (up, run, watch, worker, router, flower, status, export, report, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcap",
        description="Caption a folder of images with Kosmos-2, score with CLIP, file the results.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    shards.add_submit_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Log lines say which kcap process wrote them ("kcap-router"), not "MainProcess".
    multiprocessing.current_process().name = f"kcap-{args.command}"
    configure_logging(args.log_level)
    try:
        return int(args.handler(args) or Exit.OK)
    except KcapError as exc:
        # A clear sentence, no traceback soup.
        print(f"kcap: error: {exc}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
