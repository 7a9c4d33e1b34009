"""A restart over a done backlog finds each input's record from its size and mtime, unread."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from producer.enqueue import Enqueuer
from shared.core.inflight import InFlight
from shared.core.messages import Result
from shared.core.naming import job_id_for
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from workers.routing.router import Router


def test_a_done_input_is_skipped_by_size_and_mtime_and_a_changed_one_is_not(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None
    source = settings.input_dir / "a.jpg"
    source.write_bytes(b"first bytes")
    sha = hashlib.sha256(b"first bytes").hexdigest()
    Router(settings).route(
        Result(job_id=job_id_for("a.jpg", sha), rel_path="a.jpg", content_sha256=sha, ok=True, caption="c")
    )
    publisher = StubPublisher()
    enqueuer = Enqueuer(settings, publisher, InFlight.connect(settings))
    assert enqueuer.offer(source, "a.jpg").status == "done"

    # Same size, mtime set back: taken as unchanged without reading (as rsync does), which
    # shows the bytes were not hashed.
    stat = source.stat()
    source.write_bytes(b"other bytes")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert enqueuer.offer(source, "a.jpg").status == "done"

    # A real change (new mtime) is read, hashed and queued as a new job.
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert enqueuer.offer(source, "a.jpg").status == "queued"
    assert [job.rel_path for job in publisher.jobs] == ["a.jpg"]
