"""Lost jobs under the in-flight cap: a claim that is never routed must not hold its slot for ever.

A real Redis holds the claims; the enqueue side publishes into a StubPublisher, so a lost
message is simply one that is dropped from its list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from producer.enqueue import Enqueued, Enqueuer
from shared.core.broker import redis_client
from shared.core.inflight import InFlight
from shared.core.outcomes import Outcome
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from tests.conftest import wait_for
from tests.integration.helpers import image_bytes
from workers.tiny.images import tiny_images


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(broker_url=redis_url, max_in_flight=2, stale_claim_s=30.0)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis_client(redis_url, decode_responses=True)
    yield connection
    connection.close()


@dataclass
class Scene:
    """Three input files; the first two were sent, their messages lost, their claims an hour old."""

    paths: dict[str, Path]
    publisher: StubPublisher
    inflight: InFlight
    enqueuer: Enqueuer
    lost: list[str]  # the job ids of the first two files


def _scene(settings: Settings, client: redis.Redis, names: list[str], *, seed: int) -> Scene:
    assert settings.input_dir is not None
    paths = {}
    for name, image in zip(names, tiny_images(len(names), seed=seed), strict=True):
        paths[name] = settings.input_dir / name
        paths[name].write_bytes(image_bytes(image))
    publisher = StubPublisher()
    inflight = InFlight.connect(settings)
    enqueuer = Enqueuer(settings, publisher, inflight)
    lost = [enqueuer.offer(paths[name], name).job_id for name in names[:2]]
    publisher.jobs.clear()
    client.zadd(settings.keys.inflight, {job_id: time.time() - 3600 for job_id in lost}, xx=True)
    assert inflight.size() == settings.max_in_flight  # every slot held by a lost job
    return Scene(paths, publisher, inflight, enqueuer, lost)


def _offer_aside(enqueuer: Enqueuer, path: Path) -> tuple[threading.Thread, list[Enqueued]]:
    """offer() in a thread of its own, so that a test never hangs on a wait for room."""
    offered: list[Enqueued] = []
    thread = threading.Thread(target=lambda: offered.append(enqueuer.offer(path, path.name)), daemon=True)
    thread.start()
    return thread, offered


def test_lost_jobs_holding_every_slot_are_sent_again_and_the_cap_still_holds(
    settings: Settings, client: redis.Redis
) -> None:
    scene = _scene(settings, client, ["a.png", "b.png", "c.png"], seed=51)
    publisher, inflight, lost = scene.publisher, scene.inflight, scene.lost

    # A new file arrives; the scan that would bring a.png and b.png round again comes after it.
    thread, offered = _offer_aside(scene.enqueuer, scene.paths["c.png"])
    try:
        wait_for(
            lambda: sorted(job.rel_path for job in publisher.jobs) == ["a.png", "b.png"],
            timeout_s=15,
            what="both lost jobs sent again while c.png waits for room",
        )
        # Sent again, their claims are fresh: the cap still holds c.png back.
        time.sleep(0.5)
        assert thread.is_alive() and not offered and inflight.size() == 2
        assert all((inflight.age(job_id) or 3600.0) < 5.0 for job_id in lost)
        inflight.record_outcome(lost[0], Outcome.OUTPUT)  # a.png is routed
        thread.join(timeout=15)
        assert [o.status for o in offered] == ["queued"]
        assert [job.rel_path for job in publisher.jobs] == ["a.png", "b.png", "c.png"]
    finally:
        client.delete(settings.keys.inflight)  # never leave the offer thread waiting
        thread.join(timeout=15)


def test_a_stale_claim_that_cannot_be_sent_again_frees_its_slot(
    settings: Settings, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    scene = _scene(settings, client, ["gone.png", "changed.png", "new.png"], seed=53)
    inflight, lost = scene.inflight, scene.lost
    scene.paths["gone.png"].unlink()
    scene.paths["changed.png"].write_bytes(image_bytes(tiny_images(1, seed=54)[0]))  # new bytes: a new job

    with caplog.at_level(logging.WARNING, logger="producer.enqueue"):
        thread, offered = _offer_aside(scene.enqueuer, scene.paths["new.png"])
        try:
            thread.join(timeout=15)
            assert [o.status for o in offered] == ["queued"]  # it returned: the stale claims made room
            assert not any(inflight.contains(job_id) for job_id in lost)
            assert inflight.size() == 2  # changed.png's new job and new.png
        finally:
            client.delete(settings.keys.inflight)  # never leave the offer thread waiting
            thread.join(timeout=15)
    assert sorted(job.rel_path for job in scene.publisher.jobs) == ["changed.png", "new.png"]
    for job_id in lost:
        assert any(job_id in m and "freeing its slot" in m for m in caplog.messages), caplog.messages
