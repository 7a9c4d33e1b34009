"""`kcap worker` (one process per GPU, supervised), `kcap worker-process` and `kcap router`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from typing import Any

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.procs import ProcessGroup
from shared.errors import EXIT_ERROR, ConfigError
from shared.metrics import serve as serve_metrics
from shared.settings import Settings

log = logging.getLogger(__name__)


def add_parsers(commands: Any) -> None:
    parser = commands.add_parser("worker", help="caption workers: one process per GPU, supervised")
    add_settings_arguments(parser)
    parser.add_argument(
        "--name-prefix",
        default=None,
        help="prefix of the Celery node names (PREFIX-gpu0@host), to tell apart workers whose "
        "hosts share a name, e.g. containers that all see their GPU as 0 (env KCAP_NAME_PREFIX)",
    )
    parser.set_defaults(handler=run_supervisor)

    one = commands.add_parser("worker-process", help="one caption worker process (used by `kcap worker`)")
    add_settings_arguments(one)
    one.add_argument("--name", default=None, help="Celery node name, e.g. gpu0@host")
    one.set_defaults(handler=run_one)

    router = commands.add_parser("router", help="route worker: files results into the folders (supervised)")
    add_settings_arguments(router)
    router.add_argument("--concurrency", type=int, default=4, help="route threads (4)")
    router.set_defaults(handler=run_router_supervisor)

    router_one = commands.add_parser(
        "router-process", help="one route worker process (used by `kcap router`)"
    )
    add_settings_arguments(router_one)
    router_one.add_argument("--concurrency", type=int, default=4, help="route threads (4)")
    router_one.set_defaults(handler=run_router)


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


def child_env(settings: Settings, gpu: int | None, *, metrics_port: int = 0) -> dict[str, str]:
    env = settings.child_env()
    # Pinning: the child sees exactly one GPU (or none), and calls it cuda:0.
    env["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    # Each child serves its own /metrics: the N-th one on the base port + N.
    env["KCAP_METRICS_PORT"] = str(metrics_port)
    return env


def node_name(gpu: int | None, *, queue_prefix: str = "", name_prefix: str = "") -> str:
    """gpu0@host / cpu@host; a queue prefix (one kcap instance among several on one Redis)
    and a name prefix (hosts that share a name) keep node names distinct in Flower."""
    kind = "cpu" if gpu is None else f"gpu{gpu}"
    lead = f"{name_prefix}-" if name_prefix else ""
    return f"{lead}{queue_prefix}{kind}@{socket.gethostname()}"


def route_node_name(settings: Settings) -> str:
    return f"{settings.queue_prefix}route@{socket.gethostname()}"


def run_supervisor(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.broker_url:
        from shared.celery_app import raise_missing_broker

        raise_missing_broker()
    name_prefix = args.name_prefix if args.name_prefix is not None else settings.name_prefix
    base_port = settings.metrics_port
    group = ProcessGroup(stop_timeout_s=settings.stop_timeout_s)
    for index, gpu in enumerate(resolve_gpus(settings.gpus)):
        name = node_name(gpu, queue_prefix=settings.queue_prefix, name_prefix=name_prefix)
        argv = [sys.executable, "-m", "shared.cli.main", "worker-process", "--name", name]
        port = base_port + index if base_port else 0
        group.start(name, argv, env=child_env(settings, gpu, metrics_port=port))
    return supervise(group)


def supervise(group: ProcessGroup) -> int:
    """Keep the children alive until SIGTERM/SIGINT, then stop them warmly.

    A child that stopped on an error of its own (a bad setting: every sibling would stop on
    it too) stops the group, and this exits with its status, for `kcap up`, systemd or k8s
    to see."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping.wait(0.5):
            dead = group.poll()
            if dead:
                names = ", ".join(child.name for child in dead)
                log.error("%s stopped with an error (its message is above); stopping", names)
                return EXIT_ERROR
    finally:
        group.stop()
    return 0


def run_one(args: argparse.Namespace) -> int:
    from workers.process import run_caption_worker

    settings = settings_from_args(args)
    if not settings.broker_url:
        from shared.celery_app import raise_missing_broker

        raise_missing_broker()
    name = args.name or node_name(None, queue_prefix=settings.queue_prefix)
    serve_metrics(role="caption", worker=name, port=settings.metrics_port, address=settings.metrics_address)
    run_caption_worker(settings, name=name)
    return 0


def run_router_supervisor(args: argparse.Namespace) -> int:
    """The route worker under a supervisor: a Celery worker can die on a Redis outage
    (a kombu bug on reconnect), and the storage host must not stop filing results."""
    settings = settings_from_args(args)
    settings.require_folders()
    group = ProcessGroup(stop_timeout_s=settings.stop_timeout_s)
    argv = [sys.executable, "-m", "shared.cli.main", "router-process", "--concurrency", str(args.concurrency)]
    group.start(route_node_name(settings), argv, env=settings.child_env())
    return supervise(group)


def run_router(args: argparse.Namespace) -> int:
    from workers.process import run_route_worker

    settings = settings_from_args(args)
    settings.require_folders()
    name = route_node_name(settings)
    serve_metrics(role="route", worker=name, port=settings.metrics_port, address=settings.metrics_address)
    run_route_worker(settings, name=name, concurrency=args.concurrency)
    return 0
