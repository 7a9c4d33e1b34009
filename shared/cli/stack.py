"""What `kcap up` and `kcap run` start beside the producer: an embedded Redis when no broker
URL is set, the caption workers, the route worker and (for `up`) Flower."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from shared.cli.flower import flower_command
from shared.cli.supervisor import ProcessGroup, kcap_argv
from shared.core.embedded_redis import EmbeddedRedis, private_folder
from shared.core.errors import BrokerError, ConfigError
from shared.core.logs import CONSOLE_LEVEL_ENV, LOG_FILE_ENV, is_debug, log_to_file, set_console
from shared.core.metrics import port_for
from shared.core.settings import Settings
from shared.core.status import broker_file, write_broker_file

log = logging.getLogger(__name__)


def make_folders(settings: Settings) -> None:
    for folder in (
        settings.input_dir,
        settings.output_dir,
        settings.clip_failed_dir,
        settings.errors_dir,
    ):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    # The embedded Redis's data, socket and URL (with its password) live here.
    private_folder(settings.state_dir)


def log_dir(settings: Settings) -> Path:
    """Where `kcap up`/`kcap run` and the processes they start write their logs."""
    return settings.state_dir / "logs"


def start_logging(settings: Settings) -> tuple[bool, Path]:
    """Everything to the log folder's kcap.log; only warnings to the console unless DEBUG.
    Returns (verbose, the log folder)."""
    verbose = is_debug()
    logs = log_dir(settings)
    log_to_file(logs / "kcap.log")
    if not verbose:
        set_console(level=logging.WARNING)
    return verbose, logs


class Stack:
    """Redis (when embedded) and the worker processes, started and stopped together.

    Each child logs everything to its own file under log_dir and, unless verbose, only
    warnings and errors to its output, which goes a line at a time to output (the live
    display prints them above itself).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        flower: bool,
        router: bool = True,
        output: Callable[[str], None] | None = None,
        verbose: bool = False,
    ) -> None:
        self.settings = settings
        self.flower = flower
        self.router = router  # dataset mode files in the caption workers: no route worker
        self.output = output
        self.verbose = verbose
        self.redis: EmbeddedRedis | None = None
        self.group = ProcessGroup()

    def _child_env(self, role: str, **extra: str) -> dict[str, str]:
        env = {
            **self.settings.child_env(),
            LOG_FILE_ENV: str(log_dir(self.settings) / f"{role}.log"),
            **extra,
        }
        if not self.verbose:
            env[CONSOLE_LEVEL_ENV] = "WARNING"
            env["FLOWER_LOGGING"] = "warning"
            env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' "Loading weights" bars too
        return env

    def __enter__(self) -> Stack:
        if not self.settings.broker_url:
            private_folder(self.settings.state_dir)
            # One password for the life of the stack: keep_alive restarts this same server.
            self.redis = EmbeddedRedis(self.settings.state_dir / "redis").start()
            self.settings = self.settings.replace(broker_url=self.redis.url)
            write_broker_file(self.settings, self.redis.url)
        try:
            port = self.settings.metrics_port
            # Each process serves its own /metrics: the router on the port, workers above it.
            worker_env = self._child_env("worker", KCAP_METRICS_PORT=str(port_for(port, 1)))
            self.group.start("caption workers", kcap_argv("worker"), env=worker_env, output=self.output)
            if self.router:
                router_env = self._child_env("router", KCAP_METRICS_PORT=str(port_for(port, 0)))
                self.group.start("route worker", kcap_argv("router"), env=router_env, output=self.output)
            if self.flower:
                argv, flower_env = flower_command(self.settings)
                flower_env = {**self._child_env("flower"), **flower_env}
                self.group.start("flower", argv, env=flower_env, output=self.output)
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
            self.redis.close()
            broker_file(self.settings).unlink(missing_ok=True)
