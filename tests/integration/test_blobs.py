"""Large images travel as stored blobs beside small job messages (shared.core.blobs): the
bytes arrive intact, the blob is deleted once routed, and a delivery whose blob is gone is
dropped without a second outcome while the worker goes on."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest
from PIL import Image

from producer.enqueue import Enqueuer, Offer
from shared.core.blobs import INLINE_MAX_BYTES, Blobs
from shared.core.broker import redis_client
from shared.core.celery_app import make_app
from shared.core.embedded_redis import EmbeddedRedis
from shared.core.errors import DecodeError
from shared.core.inflight import InFlight
from shared.core.messages import Job
from shared.core.naming import job_id_for
from shared.core.outcomes import Outcome
from shared.core.publisher import CeleryPublisher, StubPublisher
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import drop_images, image_bytes, records, routed_sources


def _big_png(seed: int) -> bytes:
    data = image_bytes(Image.effect_noise((400, 300), 40 + seed).convert("RGB"))
    assert len(data) > INLINE_MAX_BYTES
    return data


def test_a_large_image_is_stored_once_raw_and_deleted_when_its_claim_is_freed(
    make_settings: Callable[..., Settings], redis_url: str, redis_server: EmbeddedRedis
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None
    big, small = settings.input_dir / "big.png", settings.input_dir / "small.png"
    big.write_bytes(_big_png(1))
    small.write_bytes(b"\x89PNG small enough to travel inline")
    publisher, inflight, blobs = StubPublisher(), InFlight.connect(settings), Blobs.connect(settings)
    enqueuer = Enqueuer(settings, publisher, inflight, blobs=blobs)
    assert enqueuer.offer(big, "big.png").status == Offer.QUEUED
    assert enqueuer.offer(small, "small.png").status == Offer.QUEUED
    stored, inline = publisher.jobs
    assert stored.image_stored and stored.image_b64 == "" and len(stored.encode()) < 2000
    assert blobs.get(stored.job_id) == big.read_bytes()
    assert not inline.image_stored and inline.image_bytes() == small.read_bytes()
    client = redis_client(redis_server.admin_url)  # TTL is not among kcap's commands
    try:
        assert client.ttl(settings.keys.blob(stored.job_id)) >= 3000
    finally:
        client.close()
    inflight.record_outcome(stored.job_id, Outcome.OUTPUT)
    assert blobs.get(stored.job_id) is None


def test_a_job_is_either_inline_or_stored() -> None:
    sha = "0" * 64
    with pytest.raises(DecodeError, match="either inline or stored"):
        Job(
            job_id=job_id_for("a.png", sha),
            rel_path="a.png",
            content_sha256=sha,
            size=3,
            mtime=0.0,
            image_b64="AAAA",
            options=Settings().caption_options(),
            enqueued_at=0.0,
            image_stored=True,
        )


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_a_delivery_whose_blob_is_gone_is_dropped_and_the_worker_goes_on(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None
    data = _big_png(2)
    (settings.input_dir / "gone.png").write_bytes(data)
    publisher = CeleryPublisher(
        make_app(settings), caption_queue=settings.caption_queue, route_queue=settings.route_queue
    )
    sha = hashlib.sha256(data).hexdigest()
    # A second delivery of a job already routed: its blob was deleted with its claim.
    publisher.send_job(
        Job(
            job_id=job_id_for("gone.png", sha),
            rel_path="gone.png",
            content_sha256=sha,
            size=len(data),
            mtime=time.time(),
            image_b64="",
            options=settings.caption_options(),
            enqueued_at=time.time(),
            image_stored=True,
        )
    )
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    wait_for(lambda: "no longer stored" in procs.logs(), timeout_s=90, what="the drop", logs=procs.logs)
    (settings.input_dir / "gone.png").unlink()  # the watcher must not pick it up as new
    expected = drop_images(settings, 2, seed=93, prefix="after-")
    procs.kcap("watch", settings=settings)
    wait_for(
        lambda: routed_sources(settings) == expected, timeout_s=90, what="the next jobs", logs=procs.logs
    )
    assert all(r["source"] != "gone.png" for group in records(settings).values() for r in group)
