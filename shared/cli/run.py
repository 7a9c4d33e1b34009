"""`kcap run`: caption everything in the input folder, then exit (the original script's job)."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.shards import add_shard_arguments, run_shards
from shared.cli.stack import Stack, make_folders, require_input_folder, start_logging
from shared.core.folder_lock import hold_folders
from shared.core.settings import Settings

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "run", help="caption everything in the input folder (or the --input-shards), then exit"
    )
    add_settings_arguments(parser)
    add_shard_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.input_shards:
        return run_shards(args)
    return run_backlog(settings_from_args(args))


def run_backlog(settings: Settings) -> int:
    """Caption everything under the input folder once, wait until all of it is routed, stop."""
    from producer.service import Producer
    from shared.cli.progress import Progress
    from shared.cli.summary import print_summary

    settings.require_folders()
    require_input_folder(settings)
    make_folders(settings)
    locks = hold_folders(settings, command="kcap run", state=True)  # one kcap on these folders
    verbose, logs = start_logging(settings)
    progress = Progress(title=f"kcap run: {settings.input_dir}", log_dir=logs)
    try:
        with Stack(settings, flower=False, output=progress.emit, verbose=verbose) as stack:
            producer = Producer(stack.settings)
            progress.watch(producer.inflight)
            signal.signal(signal.SIGINT, lambda *_: producer.stop())
            signal.signal(signal.SIGTERM, lambda *_: producer.stop())

            def on_progress() -> None:
                stack.keep_alive()
                progress.tick()

            stats = producer.run_backlog(on_progress=on_progress)
            progress.close()  # the final counts, read before the broker stops
    finally:
        progress.close()
        locks.release()
    print_summary(settings, progress, command="kcap run", stats=stats)
    return Exit.OK
