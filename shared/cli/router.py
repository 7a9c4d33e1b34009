"""`kcap router` (the route worker, supervised) and `kcap router-process` (the worker itself)."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.supervisor import ProcessGroup, kcap_argv, supervise
from shared.core.folder_lock import hold_folders
from shared.core.metrics import serving as serve_metrics
from shared.core.settings import Settings

ROUTE_THREADS = 16


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("router", help="route worker: files results into the folders (supervised)")
    add_settings_arguments(parser)
    # Routing waits on fsyncs, which release the GIL: many threads overlap them.
    parser.add_argument(
        "--concurrency", type=int, default=ROUTE_THREADS, help=f"route threads ({ROUTE_THREADS})"
    )
    parser.set_defaults(handler=router)

    one = commands.add_parser("router-process", help="one route worker process (used by `kcap router`)")
    add_settings_arguments(one)
    one.add_argument(
        "--concurrency", type=int, default=ROUTE_THREADS, help=f"route threads ({ROUTE_THREADS})"
    )
    one.set_defaults(handler=router_process)


def route_node_name(settings: Settings) -> str:
    return f"{settings.queue_prefix}route@{socket.gethostname()}"


def router(args: argparse.Namespace) -> int:
    """The route worker under a supervisor: a Celery worker can die on a Redis outage
    (a kombu bug on reconnect), and the storage host must not stop filing results."""
    settings = settings_from_args(args)
    settings.require_folders()
    settings.require_broker()
    # Taken here, not in the process below: a restart of that one keeps the folders.
    with hold_folders(settings, command="kcap router", state=False):
        group = ProcessGroup(stop_timeout_s=settings.stop_timeout_s)
        argv = kcap_argv("router-process", "--concurrency", str(args.concurrency))
        group.start(route_node_name(settings), argv, env=settings.child_env())
        return supervise(group)


def router_process(args: argparse.Namespace) -> int:
    from workers.routing.worker import run_route_worker

    settings = settings_from_args(args)
    settings.require_folders()
    name = route_node_name(settings)
    # A no-op under `kcap router` or `kcap up`, which hold the folders for it.
    with (
        hold_folders(settings, command="kcap router-process", state=False),
        serve_metrics(
            role="route", worker=name, port=settings.metrics_port, address=settings.metrics_address
        ),
    ):
        run_route_worker(settings, name=name, concurrency=args.concurrency)
    return Exit.OK
