"""The cap on bytes in flight (--max-in-flight-bytes): a backlog of large files never holds
more than the cap in Redis, and one file larger than the cap still goes through, alone.

A real Redis holds the claims; jobs are published into a StubPublisher and "routed" by this
test, which frees their claims one by one as the route task does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from producer.enqueue import Enqueuer, Offer
from shared.core.inflight import InFlight
from shared.core.outcomes import Outcome
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from tests.conftest import wait_for

KIB = 1024


def _route_all(publisher: StubPublisher, inflight: InFlight, expected: int, cap: int) -> list[int]:
    """Free every job's claim, the oldest first; the bytes held before each one."""
    held: list[int] = []
    done = 0
    while done < expected:
        what = f"job {done + 1} of {expected}"
        wait_for(lambda done=done: len(publisher.jobs) > done, timeout_s=15, what=what)
        held.append(inflight.bytes_in_flight())
        assert held[-1] <= cap or inflight.size() == 1, f"{held[-1]} bytes in flight over the cap {cap}"
        inflight.record_outcome(publisher.jobs[done].job_id, Outcome.OUTPUT)
        done += 1
    return held


def test_a_backlog_of_large_files_never_holds_more_than_the_byte_cap(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    cap = 100 * KIB
    settings = make_settings(broker_url=redis_url, max_in_flight=50, max_in_flight_bytes=cap)
    assert settings.input_dir is not None
    sizes = [30 * KIB, 45 * KIB, 20 * KIB, 60 * KIB, 10 * KIB, 90 * KIB, 5 * KIB, 40 * KIB]
    paths = []
    for i, size in enumerate(sizes):
        path = settings.input_dir / f"big_{i}.jpg"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    publisher, inflight = StubPublisher(), InFlight.connect(settings)
    enqueuer = Enqueuer(settings, publisher, inflight)
    offered: list[Offer] = []
    thread = threading.Thread(
        target=lambda: offered.extend(enqueuer.offer(p, p.name).status for p in paths), daemon=True
    )
    thread.start()
    held = _route_all(publisher, inflight, len(sizes), cap)
    thread.join(timeout=15)
    assert offered == [Offer.QUEUED] * len(sizes)
    assert max(held) <= cap and max(held) > 60 * KIB  # the cap binds, and is used
    assert inflight.bytes_in_flight() == 0 and inflight.size() == 0


def test_a_file_larger_than_the_cap_goes_alone(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    cap = 50 * KIB
    settings = make_settings(broker_url=redis_url, max_in_flight=50, max_in_flight_bytes=cap)
    assert settings.input_dir is not None
    small, huge = settings.input_dir / "small.jpg", settings.input_dir / "huge.jpg"
    small.write_bytes(os.urandom(10 * KIB))
    huge.write_bytes(os.urandom(200 * KIB))
    publisher, inflight = StubPublisher(), InFlight.connect(settings)
    enqueuer = Enqueuer(settings, publisher, inflight)
    assert enqueuer.offer(small, small.name).status == Offer.QUEUED
    # With the small one in flight the huge one must wait...
    assert enqueuer.offer(huge, huge.name, wait=False).status == Offer.NO_ROOM
    inflight.record_outcome(publisher.jobs[0].job_id, Outcome.OUTPUT)
    # ...and once nothing is in flight it goes, alone.
    assert enqueuer.offer(huge, huge.name, wait=False).status == Offer.QUEUED
    assert inflight.bytes_in_flight() == 200 * KIB
