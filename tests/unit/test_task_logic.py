"""The task bodies as plain functions, in process: caption_job over a real tiny Engine and
Batcher, route_result over a real Router and a real Redis, Enqueuer.offer over the stub
publisher. No Celery worker is started: these are the fast tests of what the tasks do."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from producer.enqueue import Enqueuer
from shared.core.errors import UnsafePathError
from shared.core.inflight import InFlight
from shared.core.messages import CaptionOptions, Job, Result
from shared.core.naming import job_id_for
from shared.core.outcomes import Outcome
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from tests.integration.helpers import image_bytes
from tests.results import result_for
from workers.captioning.batcher import Batcher
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.task import caption_job
from workers.routing.router import Router
from workers.routing.task import route_result
from workers.tiny.images import tiny_images


def _job(data: bytes, rel: str, options: CaptionOptions) -> Job:
    sha = hashlib.sha256(data).hexdigest()
    return Job(
        job_id=job_id_for(rel, sha),
        rel_path=rel,
        content_sha256=sha,
        size=len(data),
        mtime=0.0,
        image_b64=Job.encode_bytes(data),
        options=options,
        enqueued_at=0.0,
    )


def test_caption_job_captions_scores_and_names_its_worker(
    engine: Engine, batcher: Batcher[CaptionOptions, Prepared, Captioned]
) -> None:
    options = CaptionOptions(prompts=("detailed", "An image of"), max_new_tokens=6, score=True)
    result = caption_job(_job(image_bytes(tiny_images(1)[0]), "a.png", options), engine, batcher, worker="w1")
    assert result.ok and result.caption and result.worker == "w1"
    assert result.score is not None and len(result.captions) == 2
    best = max(result.captions, key=lambda c: c["clip_score"])
    assert (result.prompt, result.caption) == (best["prompt"], best["caption"])
    assert result.width == 64 and result.height == 48


def test_caption_job_turns_unreadable_bytes_into_an_error_result(
    engine: Engine, batcher: Batcher[CaptionOptions, Prepared, Captioned]
) -> None:
    options = CaptionOptions(prompts=("detailed",), max_new_tokens=4)
    result = caption_job(_job(b"this is not an image", "bad.png", options), engine, batcher, worker="w1")
    assert not result.ok and result.error_class == "BadImageError"
    assert "not an image" in result.error_reason


@pytest.fixture
def routed_settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(broker_url=redis_url, threshold=15.0)


def _result(settings: Settings, rel: str, data: bytes, score: float) -> Result:
    assert settings.input_dir is not None
    (settings.input_dir / rel).write_bytes(data)
    return result_for(rel, data, ok=True, caption="c", score=score)


def test_route_result_files_counts_and_frees_the_claim_once(routed_settings: Settings) -> None:
    inflight, router = InFlight.connect(routed_settings), Router(routed_settings)
    result = _result(routed_settings, "a.png", b"aaa", score=10.0)
    assert inflight.try_add(result.job_id, result.rel_path)
    routed = route_result(result, router, inflight)
    assert routed.outcome is Outcome.CLIP_FAILED and routed.newly_placed
    assert not inflight.contains(result.job_id)
    again = route_result(result, router, inflight)  # a redelivery
    assert not again.newly_placed
    assert inflight.counts() == {Outcome.OUTPUT: 0, Outcome.CLIP_FAILED: 1, Outcome.ERRORS: 0}


def test_route_result_refuses_a_path_out_of_the_roots_and_frees_its_claim(routed_settings: Settings) -> None:
    inflight, router = InFlight.connect(routed_settings), Router(routed_settings)
    sha = "ab" * 32
    escape = Result(job_id="0123abcd", rel_path="../../etc/x.png", content_sha256=sha, ok=True, score=20.0)
    inflight.try_add(escape.job_id, escape.rel_path)
    with pytest.raises(UnsafePathError):
        route_result(escape, router, inflight)
    assert not inflight.contains(escape.job_id)


def test_offer_queues_once_then_sees_the_claim_then_the_record(routed_settings: Settings) -> None:
    assert routed_settings.input_dir is not None
    publisher, inflight = StubPublisher(), InFlight.connect(routed_settings)
    enqueuer = Enqueuer(routed_settings, publisher, inflight)
    path = routed_settings.input_dir / "b.png"
    path.write_bytes(image_bytes(tiny_images(1, seed=2)[0]))
    first = enqueuer.offer(path, "b.png")
    assert first.status == "queued" and [j.job_id for j in publisher.jobs] == [first.job_id]
    assert publisher.jobs[0].options == routed_settings.caption_options()
    assert enqueuer.offer(path, "b.png").status == "in_flight"  # a duplicate event
    job = publisher.jobs[0]
    result = Result(
        job_id=job.job_id,
        rel_path="b.png",
        content_sha256=job.content_sha256,
        ok=True,
        caption="c",
        score=30.0,
    )
    route_result(result, Router(routed_settings), inflight)
    assert enqueuer.offer(path, "b.png").status == "done"
    assert len(publisher.jobs) == 1
