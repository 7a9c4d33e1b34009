"""`kcap`: one console script; each subcommand lives in its own module, named after it.

The CLI is the top floor: it composes the producer and the workers and nothing imports it.
Each handler returns an Exit (shared.cli.exits); a KcapError becomes one sentence on stderr
and Exit.ERROR, never a traceback.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence

from shared.cli import demo, export, flower, report, router, run, shards, status, up, watch, worker
from shared.cli.exits import Exit
from shared.cli.options import LOG_LEVEL_FLAGS, LOG_LEVEL_OPTIONS
from shared.cli.parser import KcapParser
from shared.core.errors import KcapError
from shared.core.logs import configure_logging

log = logging.getLogger("kcap")

COMMANDS = (up, run, watch, worker, router, flower, status, export, report, demo)


def build_parser() -> KcapParser:
    parser = KcapParser(
        prog="kcap",
        description="Caption a folder of images with Kosmos-2, score with CLIP, file the results.",
    )
    # Before the subcommand too, as it always was; its own dest, or the subcommand's unset
    # flag would overwrite it.
    parser.add_argument(*LOG_LEVEL_FLAGS, dest="top_log_level", default=None, **LOG_LEVEL_OPTIONS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    shards.add_submit_parser(commands)
    for sub in commands.choices.values():
        if not any(action.dest == "log_level" for action in sub._actions):
            sub.add_argument(*LOG_LEVEL_FLAGS, dest="log_level", default=None, **LOG_LEVEL_OPTIONS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args_or_exit(argv)
    # Log lines say which kcap process wrote them ("kcap-router"), not "MainProcess".
    multiprocessing.current_process().name = f"kcap-{args.command}"
    # The subcommand's flag wins; either becomes the settings' log_level, which every child
    # process started with these settings gets as KCAP_LOG_LEVEL.
    args.log_level = args.log_level or args.top_log_level
    if args.log_level:
        os.environ["KCAP_LOG_LEVEL"] = args.log_level  # for the children of commands without settings
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
