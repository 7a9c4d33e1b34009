"""`kcap worker` (one process per GPU, supervised), `kcap worker-process` and `kcap router`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.procs import ProcessGroup
from shared.errors import ConfigError
from shared.settings import Settings

log = logging.getLogger(__name__)


def add_parsers(commands: Any) -> None:
    parser = commands.add_parser("worker", help="caption workers: one process per GPU, supervised")
    add_settings_arguments(parser)
    parser.set_defaults(handler=run_supervisor)

    one = commands.add_parser("worker-process", help="one caption worker process (used by `kcap worker`)")
    add_settings_arguments(one)
    one.add_argument("--name", default=None, help="Celery node name, e.g. gpu0@host")
    one.set_defaults(handler=run_one)

    router = commands.add_parser("router", help="route worker: files results into the folders")
    add_settings_arguments(router)
    router.add_argument("--concurrency", type=int, default=4)
    router.set_defaults(handler=run_router)


def resolve_gpus(spec: str) -> list[int | None]:
    """GPU indices to run on; [None] means one CPU worker."""
    spec = spec.strip().lower()
    if spec == "cpu":
        return [None]
    if spec in ("auto", "all"):
        count = visible_gpu_count()
        if count == 0:
            if spec == "all":
                log.warning("--gpus all, but no GPU is visible; running one CPU worker")
            return [None]
        return list(range(count))
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus must be auto, cpu, all or a list like 0,2,3, not {spec!r}") from None
    if not indices or len(set(indices)) != len(indices) or min(indices) < 0:
        raise ConfigError(f"--gpus {spec!r}: give distinct non-negative GPU indices")
    return list(indices)


def visible_gpu_count() -> int:
    """How many GPUs this host has, without creating a CUDA context in the supervisor."""
    import torch

    return int(torch.cuda.device_count())


def child_env(settings: Settings, gpu: int | None) -> dict[str, str]:
    env = {**os.environ, **settings.to_env()}
    # Pinning: the child sees exactly one GPU (or none), and calls it cuda:0.
    env["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    return env


def node_name(gpu: int | None) -> str:
    return f"{'cpu' if gpu is None else f'gpu{gpu}'}@{socket.gethostname()}"


def run_supervisor(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.broker_url:
        from shared.celery_app import raise_missing_broker

        raise_missing_broker()
    group = ProcessGroup()
    for gpu in resolve_gpus(settings.gpus):
        name = node_name(gpu)
        argv = [sys.executable, "-m", "shared.cli.main", "worker-process", "--name", name]
        group.start(name, argv, env=child_env(settings, gpu))
    return supervise(group)


def supervise(group: ProcessGroup) -> int:
    """Keep the children alive until SIGTERM/SIGINT, then stop them warmly."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping.wait(0.5):
            group.poll()
    finally:
        group.stop()
    return 0


def run_one(args: argparse.Namespace) -> int:
    from workers.process import run_caption_worker

    settings = settings_from_args(args)
    if not settings.broker_url:
        from shared.celery_app import raise_missing_broker

        raise_missing_broker()
    run_caption_worker(settings, name=args.name or node_name(None))
    return 0


def run_router(args: argparse.Namespace) -> int:
    from workers.process import run_route_worker

    settings = settings_from_args(args)
    settings.require_folders()
    run_route_worker(settings, name=f"route@{socket.gethostname()}", concurrency=args.concurrency)
    return 0
