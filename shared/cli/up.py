"""`kcap up` (the hot folder, until Ctrl-C) and `kcap run` (the backlog, then exit).

Both start what is missing: an embedded Redis when no broker URL is set, the caption
workers, the route worker and (for `up`) Flower; the producer runs in this process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from shared.cli.flower import flower_command
from shared.cli.options import add_settings_arguments, settings_from_args
from shared.cli.procs import ProcessGroup
from shared.embedded_redis import EmbeddedRedis
from shared.errors import BrokerError, ConfigError
from shared.settings import Settings

log = logging.getLogger(__name__)


def add_parsers(commands: Any) -> None:
    up = commands.add_parser("up", help="caption whatever lands in the input folder, until Ctrl-C")
    add_settings_arguments(up)
    up.add_argument("--no-flower", action="store_true", help="do not start Flower")
    up.set_defaults(handler=run_up)

    run = commands.add_parser("run", help="caption everything in the input folder, then exit")
    add_settings_arguments(run)
    run.set_defaults(handler=run_backlog)


def broker_file(settings: Settings) -> Path:
    """Where the embedded broker's URL is written, so `kcap status` can find it."""
    return settings.state_dir / "broker_url"


class Stack:
    """Redis (when embedded) and the worker processes, started and stopped together."""

    def __init__(self, settings: Settings, *, flower: bool) -> None:
        self.settings = settings
        self.flower = flower
        self.redis: EmbeddedRedis | None = None
        self.group = ProcessGroup()

    def __enter__(self) -> Stack:
        if not self.settings.broker_url:
            self.redis = EmbeddedRedis(self.settings.state_dir / "redis").start()
            self.settings = self.settings.replace(broker_url=self.redis.url)
            broker_file(self.settings).write_text(self.redis.url + "\n")
        try:
            env = self.settings.child_env()
            me = [sys.executable, "-m", "shared.cli.main"]
            # Each process serves its own /metrics: the router on the port, workers above it.
            port = self.settings.metrics_port
            worker_env = {**env, "KCAP_METRICS_PORT": str(port + 1 if port else 0)}
            self.group.start("caption workers", [*me, "worker"], env=worker_env)
            self.group.start("route worker", [*me, "router"], env={**env, "KCAP_METRICS_PORT": str(port)})
            if self.flower:
                argv, flower_env = flower_command(self.settings)
                self.group.start("flower", argv, env=flower_env)
                log.info("Flower on http://%s:%d", self.settings.flower_address, self.settings.flower_port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def keep_alive(self) -> None:
        """Restart dead children, the embedded Redis included (same port, same AOF).

        Raises ConfigError when a child stopped on an error of its own (see ProcessGroup).
        """
        if self.redis is not None and not self.redis.alive():
            log.error("the embedded Redis exited; restarting it from its append-only file")
            try:
                self.redis.start()
            except BrokerError as exc:
                log.error("cannot restart the embedded Redis yet (%s); trying again", exc)
        dead = self.group.poll()
        if dead:
            names = " and ".join(child.name for child in dead)
            raise ConfigError(f"the {names} stopped with an error (its message is above); nothing was lost")

    def __exit__(self, *exc: object) -> None:
        # Longer than the supervisors give their own children, so they finish warmly first.
        self.group.stop(timeout_s=self.settings.stop_timeout_s + 10)
        if self.redis is not None:
            self.redis.stop()
            broker_file(self.settings).unlink(missing_ok=True)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_up(args: argparse.Namespace) -> int:
    from producer.service import Producer
    from shared.cli.progress import Progress

    settings = settings_from_args(args)
    settings.require_folders()
    _make_folders(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    with Stack(settings, flower=not args.no_flower) as stack:
        producer = Producer(stack.settings)
        thread = threading.Thread(target=producer.run_forever, name="kcap-producer", daemon=True)
        thread.start()
        progress = Progress(producer.inflight)
        try:
            while not stop.wait(0.5):
                stack.keep_alive()
                progress.tick()
                if not thread.is_alive():
                    log.error("the producer stopped unexpectedly; shutting down")
                    return 1
        finally:
            producer.stop()
            thread.join(timeout=10)
            progress.close()
    return 0


def run_backlog(args: argparse.Namespace) -> int:
    from producer.service import Producer
    from shared.cli.progress import Progress

    settings = settings_from_args(args)
    settings.require_folders()
    _make_folders(settings)
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
    return 0


def _make_folders(settings: Settings) -> None:
    for folder in (
        settings.input_dir,
        settings.output_dir,
        settings.clip_failed_dir,
        settings.errors_dir,
        settings.state_dir,
    ):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
