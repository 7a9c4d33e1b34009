"""`kcap worker` (one supervised process per GPU) and `kcap worker-process` (one of them)."""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.supervisor import ProcessGroup, kcap_argv, supervise
from shared.core.metrics import port_for
from shared.core.metrics import serving as serve_metrics
from workers.captioning.gpus import Gpu, pinning_env, resolve_gpus, visible_devices

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("worker", help="caption workers: one process per GPU, supervised")
    add_settings_arguments(parser)
    parser.add_argument(
        "--name-prefix",
        default=None,
        help="prefix of the Celery node names (PREFIX-gpu0@host), to tell apart workers whose "
        "hosts share a name, e.g. containers that all see their GPU as 0 (env KCAP_NAME_PREFIX)",
    )
    parser.set_defaults(handler=worker)

    one = commands.add_parser("worker-process", help="one caption worker process (used by `kcap worker`)")
    add_settings_arguments(one)
    one.add_argument("--name", default=None, help="Celery node name, e.g. gpu0@host")
    one.set_defaults(handler=worker_process)


def node_name(gpu: Gpu | None, *, queue_prefix: str = "", name_prefix: str = "") -> str:
    """gpu0@host / cpu@host; a queue prefix (one kcap instance among several on one Redis)
    and a name prefix (hosts that share a name) keep node names distinct in Flower."""
    kind = "cpu" if gpu is None else f"gpu{gpu.index}"
    lead = f"{name_prefix}-" if name_prefix else ""
    return f"{lead}{queue_prefix}{kind}@{socket.gethostname()}"


def worker(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    settings.require_broker()
    name_prefix = args.name_prefix if args.name_prefix is not None else settings.name_prefix
    group = ProcessGroup(stop_timeout_s=settings.stop_timeout_s)
    for offset, gpu in enumerate(resolve_gpus(settings.gpus, visible_devices())):
        name = node_name(gpu, queue_prefix=settings.queue_prefix, name_prefix=name_prefix)
        env = {
            **settings.child_env(),
            **pinning_env(gpu),
            # Each child serves its own /metrics: the N-th one on the base port + N.
            "KCAP_METRICS_PORT": str(port_for(settings.metrics_port, offset)),
        }
        group.start(name, kcap_argv("worker-process", "--name", name), env=env)
    return supervise(group)


def worker_process(args: argparse.Namespace) -> int:
    # pyarrow's default pool (mimalloc) keeps a heap for every thread that used it, and each
    # shard job writes its Parquet from whichever of the many Celery pool threads runs it: the
    # worker grew by hundreds of MiB over 100 shards (bench_shards --million). The system
    # allocator shares its arenas, so memory stays flat. Read once, at pyarrow's import: here.
    os.environ.setdefault(ARROW_POOL_ENV, "system")
    from workers.captioning.worker import run_caption_worker

    settings = settings_from_args(args)
    settings.require_broker()
    name = args.name or node_name(None, queue_prefix=settings.queue_prefix)
    with serve_metrics(
        role="caption", worker=name, port=settings.metrics_port, address=settings.metrics_address
    ):
        run_caption_worker(settings, name=name)
    return Exit.OK
