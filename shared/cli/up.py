"""`kcap up`: caption whatever lands in the input folder, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.stack import Stack, make_folders, start_logging
from shared.core.folder_lock import hold_folders
from shared.core.shard_board import ShardBoard

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("up", help="caption whatever lands in the input folder, until Ctrl-C")
    add_settings_arguments(parser)
    parser.add_argument("--no-flower", action="store_true", help="do not start Flower")
    parser.set_defaults(handler=up)


def up(args: argparse.Namespace) -> int:
    from producer.service import Producer
    from shared.cli.progress import Progress
    from shared.cli.summary import print_summary

    settings = settings_from_args(args)
    input_dir, _ = settings.require_folders()
    if input_dir in make_folders(settings):
        print(
            f"kcap up: created the input folder {input_dir}; images dropped into it are captioned",
            file=sys.stderr,
        )
    locks = hold_folders(settings, command="kcap up", state=True)  # one kcap on these folders
    verbose, logs = start_logging(settings)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    flower = not args.no_flower
    title = f"kcap up: {settings.input_dir}"
    if flower:
        title += f"  (Flower: http://{settings.flower_address}:{settings.flower_port})"
    progress = Progress(title=title, log_dir=logs)
    try:
        with Stack(settings, flower=flower, output=progress.emit, verbose=verbose) as stack:
            producer = Producer(stack.settings)
            progress.watch(producer.inflight)
            progress.watch_shards(ShardBoard.connect(stack.settings))  # jobs from `kcap submit`
            thread = threading.Thread(target=producer.run_forever, name="kcap-producer", daemon=True)
            thread.start()
            try:
                while not stop.wait(0.5):
                    stack.keep_alive()
                    progress.tick()
                    if not thread.is_alive():
                        log.error("the producer stopped unexpectedly; shutting down")
                        return Exit.FAILURE
            finally:
                producer.stop()
                thread.join(timeout=10)
                progress.close()  # the final counts, read before the broker stops
    finally:
        progress.close()
        locks.release()
    print_summary(settings, progress, command="kcap up")
    return Exit.OK
