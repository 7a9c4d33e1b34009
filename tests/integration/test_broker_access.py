"""Who may use kcap's Redis, on real processes: the embedded Redis of `kcap up` wants its
password (which survives a restart of that Redis and never shows in a process list) and has
no admin commands; on a shared broker, the ACL users docs/security.md gives per role let a GPU
host caption and nothing more."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import redis
from PIL import Image

from shared.core.blobs import INLINE_MAX_BYTES
from shared.core.celery_app import CAPTION_TASK
from shared.core.embedded_redis import EmbeddedRedis, find_redis_server
from shared.core.settings import Settings
from tests.conftest import REPO, Processes, wait_for
from tests.integration.helpers import (
    children,
    drop_images,
    image_bytes,
    publish_raw,
    records,
    redis_client,
    routed_sources,
)

SECURITY = REPO / "docs" / "security.md"

# What a local attacker did to the embedded Redis (issue 10): write a file anywhere, wipe
# the queues, read the configuration, stop or re-point the server.
ADMIN_COMMANDS = [
    ("CONFIG", "SET", "dir", "/tmp"),
    ("CONFIG", "GET", "*"),
    ("SAVE",),
    ("BGSAVE",),
    ("BGREWRITEAOF",),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("MODULE", "LIST"),
    ("ACL", "LIST"),
    ("KEYS", "*"),
    ("CLIENT", "LIST"),
    ("INFO",),
    ("SCRIPT", "FLUSH"),
    ("EVAL", "return 1", "0"),
]


def _without_password(url: str) -> str:
    """The URL a local client without the password would try."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


def _assert_refused(client: redis.Redis, command: tuple[str, ...]) -> None:
    """Redis refuses the command: the user lacks the permission (or, for DEBUG, Redis 7
    refuses it to everyone before it checks permissions)."""
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        client.execute_command(*command)
    text = str(refused.value)
    assert isinstance(refused.value, redis.exceptions.NoPermissionError) or "not allowed" in text, (
        command,
        text,
    )


def _redis_children(pid: int) -> list[int]:
    return [c for c in children(pid) if Path(f"/proc/{c}/comm").read_text().strip() == "redis-server"]


def _assert_locked(url: str, password: str) -> None:
    """Without the password nothing answers; with it, no admin command does."""
    anonymous = redis_client(_without_password(url), socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis.AuthenticationError):
            anonymous.lpush("route", "forged")
    finally:
        anonymous.close()
    client = redis_client(url, socket_timeout=5)
    try:
        assert client.ping()
        for command in ADMIN_COMMANDS:
            _assert_refused(client, command)
    finally:
        client.close()


def test_the_embedded_redis_wants_its_password_refuses_admin_commands_and_keeps_both_over_a_restart(
    make_settings: Callable[..., Settings], procs: Processes
) -> None:
    settings = make_settings()
    assert settings.broker_url is None
    up = procs.kcap("up", "--no-flower", settings=settings)
    url_file = settings.state_dir / "broker_url"
    wait_for(url_file.exists, timeout_s=60, what="kcap up's broker_url file", logs=procs.tail)
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700
    url = url_file.read_text().strip()
    password = unquote(urlsplit(url).password or "")
    assert len(password) >= 32, "the embedded Redis has no (strong) password"
    _assert_locked(url, password)
    (first,) = _redis_children(up.pid)
    cmdline = Path(f"/proc/{first}/cmdline").read_bytes()
    assert password.encode() not in cmdline
    if url.startswith("redis+socket://"):
        folder = Path(urlsplit(url).path).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    # kcap up brings its Redis back from the append-only file: same URL, same password.
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: _redis_children(up.pid) not in ([], [first]),
        timeout_s=30,
        what="a new redis-server",
        logs=procs.tail,
    )
    (second,) = _redis_children(up.pid)
    assert password.encode() not in Path(f"/proc/{second}/cmdline").read_bytes()
    assert url_file.read_text().strip() == url
    wait_for(lambda: _answers(url), timeout_s=30, what="the restarted Redis answering", logs=procs.tail)
    _assert_locked(url, password)
    (name,) = drop_images(settings, 1, seed=81, prefix="after-restart-")
    wait_for(lambda: name in routed_sources(settings), timeout_s=120, what="an image routed", logs=procs.tail)
    assert password not in procs.logs()


def _answers(url: str) -> bool:
    client = redis_client(url, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


# -- a shared broker: the documented ACL users, one per role -------------------------------


def _documented_acl_lines() -> list[str]:
    text = SECURITY.read_text()
    section = text.split("## ACL users per role", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("ACL SETUSER")]
    assert lines, "docs/security.md gives no ACL SETUSER lines"
    return lines


def _redis_major() -> int:
    done = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"v=(\d+)\.", done.stdout)
    assert found, done.stdout
    return int(found.group(1))


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_a_gpu_host_with_the_documented_gpu_user_captions_and_can_do_nothing_else(
    make_settings: Callable[..., Settings], tmp_path: Path, procs: Processes
) -> None:
    lines = _documented_acl_lines()
    if _redis_major() < 7:
        pytest.skip("the role users need Redis 7 (read-only and write-only key patterns)")
    admin_password = "admin-" + os.urandom(8).hex()
    server = EmbeddedRedis(tmp_path / "redis", password=admin_password, default_user_rules="~* &* +@all")
    server.start()
    admin = redis_client(server.url)
    try:
        passwords = {
            "kcap-storage": "storage-" + os.urandom(8).hex(),
            "kcap-gpu": "gpu-" + os.urandom(8).hex(),
        }
        for line in lines:
            words = shlex.split(line)
            user = words[2]
            words = [f">{passwords[user]}" if w.startswith(">") else w for w in words]
            assert admin.execute_command(*words) in (b"OK", "OK", True), line

        def url_for(user: str) -> str:
            return server.url_for(user, passwords[user])

        gpu = make_settings(broker_url=url_for("kcap-gpu"))
        storage = make_settings(broker_url=url_for("kcap-storage"))
        procs.kcap("worker", settings=gpu)
        procs.kcap("router", settings=storage)
        expected = drop_images(storage, 3, seed=91, prefix="acl-")
        # Over the inline limit: its bytes travel as a stored blob the GPU user reads.
        assert storage.input_dir is not None
        big = Image.effect_noise((400, 300), 60).convert("RGB")
        (storage.input_dir / "acl-big.png").write_bytes(image_bytes(big))
        assert (storage.input_dir / "acl-big.png").stat().st_size > INLINE_MAX_BYTES
        expected = sorted([*expected, "acl-big.png"])
        procs.kcap("watch", settings=storage)
        wait_for(lambda: routed_sources(storage) == expected, timeout_s=120, what="4 routed", logs=procs.tail)
        assert len(records(storage)["output"]) == 4
        assert admin.keys("kcap:blob:*") == []  # deleted once routed
        # The GPU side sets aside what it cannot run, as kcap-gpu.
        junk_id = publish_raw(url_for("kcap-gpu"), gpu.caption_queue, "null", task=CAPTION_TASK)
        wait_for(
            lambda: junk_id in str(admin.lrange("kcap:dead_letters", 0, -1)),
            timeout_s=60,
            what="the junk set aside",
            logs=procs.tail,
        )
        # Nothing kcap, kombu, Celery or Flower did was refused (Redis logs every refusal).
        assert admin.execute_command("ACL", "LOG") == []
        logs = procs.logs()
        assert "NOPERM" not in logs and "no permissions" not in logs, logs[-3000:]

        gpu_client = redis_client(url_for("kcap-gpu"), socket_timeout=5)
        try:
            # What a GPU host must not do: read or take results, touch the producer's
            # bookkeeping, read what was set aside, touch other keys, or run admin commands.
            denied = [
                ("RPOP", storage.route_queue),
                ("LRANGE", storage.route_queue, "0", "-1"),
                ("ZCARD", "kcap:inflight"),
                ("ZADD", "kcap:inflight", "1", "forged"),
                ("HGETALL", "kcap:counts"),
                ("LRANGE", "kcap:dead_letters", "0", "-1"),
                ("GET", "some-other-app:key"),
                ("SET", "kcap:blob:forged", "x"),
                *ADMIN_COMMANDS,
            ]
            for command in denied:
                _assert_refused(gpu_client, command)
        finally:
            gpu_client.close()
        storage_client = redis_client(url_for("kcap-storage"), socket_timeout=5)
        try:
            for command in ADMIN_COMMANDS:
                _assert_refused(storage_client, command)
        finally:
            storage_client.close()
    finally:
        procs.stop_all()
        admin.close()
        server.close()
