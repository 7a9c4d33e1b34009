"""Many hosts, one Redis: GPU hosts that see no folders, and kcap instances that share a Redis
through distinct queue prefixes without crossing results."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.settings import Settings
from tests.conftest import REPO, Processes, wait_for
from tests.integration.helpers import drop_images, records, routed_sources
from tests.integration.monitoring import kcap_status

HOST = socket.gethostname()


def _ready(procs: Processes, *names: str) -> Callable[[], bool]:
    """Celery logs '<node> ready.' once the worker consumes."""
    return lambda: all(f"{name} ready." in procs.logs() for name in names)


def _gpu_host(tmp_path: Path, name: str, storage: Settings) -> tuple[Path, Settings]:
    """A host of its own: its own working folder, the broker and the models, and no folders."""
    home = tmp_path / name
    home.mkdir()
    settings = Settings(
        broker_url=storage.broker_url,
        caption_model=storage.caption_model,
        clip_model=storage.clip_model,
        gpus="cpu",
        batch_size=2,
        batch_wait_ms=50,
        state_dir=home / ".kcap",
        visibility_timeout_s=storage.visibility_timeout_s,
    )
    assert settings.input_dir is None and settings.output_dir is None and settings.errors_dir is None
    return home, settings


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_two_gpu_hosts_without_the_folders_share_the_work(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes, tmp_path: Path
) -> None:
    storage = make_settings(broker_url=redis_url, max_new_tokens=16)
    hosts = [_gpu_host(tmp_path, name, storage) for name in ("host-a", "host-b")]
    names = [f"host-a-cpu@{HOST}", f"host-b-cpu@{HOST}"]
    for (home, settings), prefix in zip(hosts, ("host-a", "host-b"), strict=True):
        procs.kcap("worker", "--name-prefix", prefix, settings=settings, cwd=home)
    procs.kcap("router", settings=storage)
    wait_for(_ready(procs, *names), timeout_s=90, what="both GPU hosts ready", logs=procs.tail)

    expected = drop_images(storage, 10, seed=51, prefix="s")
    procs.kcap("watch", settings=storage)
    wait_for(lambda: len(routed_sources(storage)) >= 10, timeout_s=120, what="10 routed", logs=procs.tail)

    assert routed_sources(storage) == expected
    found = records(storage)
    assert len(found["output"]) == 10 and not found["errors"], found["errors"]
    by_worker = {name: sum(r["worker"] == name for r in found["output"]) for name in names}
    assert all(by_worker.values()), f"one host did nothing: {by_worker}"
    assert sum(by_worker.values()) == 10
    for home, _ in hosts:  # the GPU hosts wrote nothing of the dataset
        assert not list(home.rglob("*.json")) and not list(home.rglob("*.png"))


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_two_instances_with_their_own_queue_prefix_share_one_redis(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes, tmp_path: Path
) -> None:
    first = make_settings(broker_url=redis_url, queue_prefix="one-", threshold=-1000.0)
    other = tmp_path / "other"
    second = make_settings(
        broker_url=redis_url,
        queue_prefix="two-",
        threshold=1000.0,  # everything fails the CLIP check here: a crossed result would show
        input_dir=other / "inbox",
        output_dir=other / "captioned",
        clip_failed_dir=other / "clip_failed",
        errors_dir=other / "errors",
        state_dir=other / "state",
    )
    assert second.input_dir is not None
    second.input_dir.mkdir(parents=True)
    for settings in (first, second):
        procs.kcap("worker-process", settings=settings)
        procs.kcap("router", settings=settings)
    workers = {first: f"one-cpu@{HOST}", second: f"two-cpu@{HOST}"}
    # The very same files in both: same job ids, which each instance must keep to itself.
    expected = drop_images(first, 4, seed=53, prefix="s")
    assert drop_images(second, 4, seed=53, prefix="s") == expected
    for settings in (first, second):
        procs.kcap("watch", settings=settings)

    wait_for(
        lambda: len(routed_sources(first)) >= 4 and len(routed_sources(second)) >= 4,
        timeout_s=120,
        what="4 routed in each instance",
        logs=procs.tail,
    )
    assert routed_sources(first) == routed_sources(second) == expected
    one, two = records(first), records(second)
    assert len(one["output"]) == 4 and not one["clip_failed"] and not one["errors"]
    assert len(two["clip_failed"]) == 4 and not two["output"] and not two["errors"]
    assert {r["worker"] for r in one["output"]} == {workers[first]}
    assert {r["worker"] for r in two["clip_failed"]} == {workers[second]}

    env = {**os.environ, **first.to_env(), "PYTHONPATH": str(REPO)}
    assert kcap_status(env)["outcomes"] == {"output": 4, "clip_failed": 0, "errors": 0}
    report = kcap_status(env, "--queue-prefix", "two-")
    assert report["outcomes"] == {"output": 0, "clip_failed": 4, "errors": 0}
    assert set(report["queues"]) == {"two-caption", "two-route", "two-shards"}
