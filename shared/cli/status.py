"""`kcap status`: queue depths, jobs in flight, outcomes, images/s and an ETA.

Without a broker URL it reads the one that `kcap up` wrote under the state folder, so
`kcap status` works as it is next to a running `kcap up`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.core.status import collect, render


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("status", help="queue depths, in flight, outcomes, rate, ETA")
    add_settings_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    parser.set_defaults(handler=status)


def status(args: argparse.Namespace) -> int:
    report = collect(settings_from_args(args))
    print(json.dumps(report) if args.json else render(report))
    return Exit.OK
