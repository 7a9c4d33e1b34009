"""Nothing lost, nothing doubled: real processes are killed, Redis restarts, disks fail."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.core.broker import redis_client
from shared.core.celery_app import CAPTION_TASK, make_app
from shared.core.embedded_redis import EmbeddedRedis, free_port
from shared.core.messages import Job
from shared.core.naming import job_id_for
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import drop_images, records, routed_sources


def _assert_each_once(settings: Settings, expected: list[str]) -> None:
    """Every input has exactly one record, and no root holds a second copy of anything."""
    assert routed_sources(settings) == expected
    for root in (settings.output_dir, settings.clip_failed_dir, settings.errors_dir):
        if root is None or not root.exists():
            continue
        leftovers = [p.name for p in root.rglob("*") if p.name.startswith(".kcap-")]
        assert not leftovers, f"temp files left in {root}: {leftovers}"
        doubled = [p.name for p in root.rglob("*") if p.is_file() and "-" in p.stem]
        assert not doubled, f"collision copies mean a job was placed twice: {doubled}"
    assert settings.input_dir is not None
    assert sorted(p.name for p in settings.input_dir.iterdir()) == expected  # nothing deleted


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_worker_killed_mid_batch_loses_nothing(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    # A short visibility timeout makes Redis hand the dead worker's jobs out again within
    # seconds; production keeps 300 s (see docs/operations.md: the trade-off). Two slots and a batch of
    # two hold 4 jobs at a time, so the kill lands mid-run (32 slots would take all 12 at once).
    settings = make_settings(
        broker_url=redis_url, visibility_timeout_s=4, max_new_tokens=24, batch_size=2, decoder_slots=2
    )
    supervisor = procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    expected = drop_images(settings, 12, seed=31)
    procs.kcap("watch", settings=settings)

    wait_for(lambda: len(routed_sources(settings)) >= 1, timeout_s=90, what="first result", logs=procs.tail)
    wait_for(lambda: bool(_children(supervisor.pid)), timeout_s=5, what="worker child")
    (child,) = _children(supervisor.pid)
    routed_before_kill = len(routed_sources(settings))
    os.kill(child, signal.SIGKILL)
    assert routed_before_kill < 12, "the kill must land mid-run to prove anything"

    wait_for(
        lambda: len(routed_sources(settings)) >= 12, timeout_s=120, what="all 12 routed", logs=procs.tail
    )
    _assert_each_once(settings, expected)
    assert "restarting" in procs.logs()  # the supervisor brought a new worker up


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (append-only), so the test may restart it."""
    server = EmbeddedRedis(tmp_path / "redis-data", port=free_port()).start()
    yield server
    server.stop()


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_redis_restarting_mid_run_loses_nothing(
    make_settings: Callable[..., Settings], own_redis: EmbeddedRedis, procs: Processes
) -> None:
    settings = make_settings(
        broker_url=own_redis.url,
        visibility_timeout_s=6,
        max_new_tokens=24,
        batch_size=2,
        decoder_slots=2,  # 4 jobs at a time, so the restart lands mid-run
        # A message kombu had popped but not yet recorded as unacknowledged when Redis went
        # down is gone from Redis (docs/operations.md, "Reliability"): kcap's answer is the stale-claim
        # resend from the reconcile scan, made quick here so that it lands within the wait.
        stale_claim_s=20.0,
        reconcile_every_s=5.0,
    )
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    # Enough images that the restart lands mid-run: the streaming decoder finishes ten of
    # them, and a route batch files them, faster than one poll of the test.
    expected = drop_images(settings, 30, seed=41)
    procs.kcap("watch", settings=settings)
    wait_for(lambda: len(routed_sources(settings)) >= 1, timeout_s=90, what="first results", logs=procs.tail)

    own_redis.stop()  # SIGTERM: Redis writes its append-only file and exits
    assert len(routed_sources(settings)) < 30, "the restart must land mid-run to prove anything"
    own_redis.start()  # same port, same data folder

    wait_for(
        lambda: len(routed_sources(settings)) >= 30, timeout_s=150, what="all 30 routed", logs=procs.tail
    )
    _assert_each_once(settings, expected)


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_a_producer_restart_mid_backlog_enqueues_nothing_twice(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, max_in_flight=4)
    expected = drop_images(settings, 10, seed=51)
    client = redis_client(redis_url)
    # No workers yet: the producer fills its four in-flight slots and waits.
    first = procs.kcap("watch", settings=settings)
    wait_for(lambda: client.llen(settings.caption_queue) == 4, timeout_s=30, what="4 queued", logs=procs.tail)
    first.send_signal(signal.SIGKILL)
    first.wait()

    procs.kcap("watch", settings=settings)  # its scan sees all 10; 4 are already in flight
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    wait_for(
        lambda: len(routed_sources(settings)) >= 10, timeout_s=120, what="all 10 routed", logs=procs.tail
    )
    _assert_each_once(settings, expected)
    assert "already routed" not in procs.logs()  # no job reached the router twice


def test_a_job_delivered_twice_is_routed_once(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url)
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    expected = drop_images(settings, 3, seed=61)
    procs.kcap("watch", settings=settings)
    wait_for(lambda: len(routed_sources(settings)) >= 3, timeout_s=90, what="3 routed", logs=procs.tail)

    # Deliver one of them again, as a redelivery or a duplicate event would.
    assert settings.input_dir is not None
    data = (settings.input_dir / expected[0]).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    job = Job(
        job_id=job_id_for(expected[0], sha),
        rel_path=expected[0],
        content_sha256=sha,
        size=len(data),
        mtime=0.0,
        image_b64=Job.encode_bytes(data),
        options=settings.caption_options(),
        enqueued_at=time.time(),
    )
    make_app(settings).send_task(
        CAPTION_TASK, args=[job.to_dict(), settings.route_queue], queue=settings.caption_queue
    )
    wait_for(lambda: "already routed" in procs.logs(), timeout_s=60, what="the duplicate", logs=procs.tail)
    _assert_each_once(settings, expected)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")


@pytest.mark.slow
def test_a_read_only_output_disk_is_retried_and_the_input_stays(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes, tmp_path: Path
) -> None:
    output = tmp_path / "ro-output"
    _mount_tmpfs(output, "4m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(output)], check=True)
        settings = make_settings(broker_url=redis_url, output_dir=output, visibility_timeout_s=30)
        procs.kcap("worker", settings=settings)
        procs.kcap("router", settings=settings)
        expected = drop_images(settings, 2, seed=71)
        procs.kcap("watch", settings=settings)
        wait_for(
            lambda: "Read-only file system" in procs.logs(),
            timeout_s=90,
            what="the write error",
            logs=procs.tail,
        )
        assert "retrying" in procs.logs() and "the input stays untouched" in procs.logs()
        assert routed_sources(settings) == []
        subprocess.run(["mount", "-o", "remount,rw", str(output)], check=True)
        wait_for(
            lambda: len(routed_sources(settings)) >= 2,
            timeout_s=60,
            what="routed after the fix",
            logs=procs.tail,
        )
        _assert_each_once(settings, expected)
        assert len(records(settings)["output"]) == 2
    finally:
        procs.stop_all()
        subprocess.run(["umount", "-l", str(output)], check=False)
