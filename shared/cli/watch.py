"""`kcap watch`: the producer alone (on the storage host)."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("watch", help="watch the input folder and enqueue new images")
    add_settings_arguments(parser)
    parser.set_defaults(handler=watch)


def watch(args: argparse.Namespace) -> int:
    from producer.service import Producer

    settings = settings_from_args(args)
    settings.require_folders()
    settings.require_broker()
    producer = Producer(settings)
    signal.signal(signal.SIGTERM, lambda *_: producer.stop())
    signal.signal(signal.SIGINT, lambda *_: producer.stop())
    producer.run_forever()
    return Exit.OK
