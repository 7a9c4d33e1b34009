"""What `kcap up` and `kcap run` start beside the producer: an embedded Redis when no broker
URL is set, the caption workers, the route worker and (for `up`) Flower."""

from __future__ import annotations

import logging
import re
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

# What a child prints outside its logging that is for its log file alone: Celery's notice
# that it shuts down warmly, once per worker, on every Ctrl-C, after a blank line.
_CHATTER = re.compile(r"worker: (Warm|Cold) shutdown \(|\s*$")


def make_folders(settings: Settings) -> list[Path]:
    """Make the pipeline's folders; returns those that did not exist (`kcap up` says so)."""
    created = []
    for folder in (
        settings.input_dir,
        settings.output_dir,
        settings.clip_failed_dir,
        settings.errors_dir,
    ):
        if folder is not None and not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created.append(folder)
    # The embedded Redis's data, socket and URL (with its password) live here.
    private_folder(settings.state_dir)
    return created


def require_input_folder(settings: Settings) -> None:
    """`kcap run` captions what is in the input folder: a missing one is a mistyped path, and
    making it would end in "nothing to do" with exit 0."""
    input_dir, _ = settings.require_folders()
    if not input_dir.is_dir():
        what = "is not a folder" if input_dir.exists() else "does not exist"
        raise ConfigError(
            f"the input folder {input_dir} {what}: check --input-dir (KCAP_INPUT_DIR), "
            "or use `kcap up`, which creates it and waits for images"
        )


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
        # Flower logs at kcap's level to its file; its console, like every child's, is set below.
        env["FLOWER_LOGGING"] = self.settings.log_level.lower()
        if not self.verbose:
            env[CONSOLE_LEVEL_ENV] = "WARNING"
            env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' "Loading weights" bars too
        return env

    def _output(self, role: str) -> Callable[[str], None] | None:
        """Where a child's output lines go: the terminal, less the chatter (to its log file)."""
        output = self.output
        if output is None or self.verbose:
            return output
        log_file = log_dir(self.settings) / f"{role}.log"

        def forward(line: str) -> None:
            if _CHATTER.match(line):
                with log_file.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            else:
                output(line)

        return forward

    def _start(self, name: str, role: str, argv: list[str], env: dict[str, str]) -> None:
        self.group.start(name, argv, env=env, output=self._output(role))

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
            self._start("caption workers", "worker", kcap_argv("worker"), worker_env)
            if self.router:
                router_env = self._child_env("router", KCAP_METRICS_PORT=str(port_for(port, 0)))
                self._start("route worker", "router", kcap_argv("router"), router_env)
            if self.flower:
                argv, flower_env = flower_command(self.settings)
                flower_env = {**self._child_env("flower"), **flower_env}
                self._start("flower", "flower", argv, flower_env)
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
