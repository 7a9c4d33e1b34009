"""`kcap run`: caption everything in the input folder, then exit (the original script's job)."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.stack import Stack, make_folders

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("run", help="caption everything in the input folder, then exit")
    add_settings_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from producer.service import Producer
    from shared.cli.progress import Progress

    settings = settings_from_args(args)
    settings.require_folders()
    make_folders(settings)
    with Stack(settings, flower=False) as stack:
        producer = Producer(stack.settings)
        signal.signal(signal.SIGINT, lambda *_: producer.stop())
        signal.signal(signal.SIGTERM, lambda *_: producer.stop())
        progress = Progress(producer.inflight)

        def on_progress() -> None:
            stack.keep_alive()
            progress.tick()

        stats = producer.run_backlog(on_progress=on_progress)
        progress.close()
    log.info("done: %s", ", ".join(f"{k} {v}" for k, v in sorted(stats.items())) or "nothing to do")
    return Exit.OK
