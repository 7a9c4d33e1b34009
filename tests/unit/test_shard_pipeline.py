"""Dataset mode's parts in process: the ShardJob message, the board in a real Redis (counts,
leases, kombu's visibility index), the planner's chunks, and the sample pipeline over a real
tiny Engine and Batcher (order, bounded memory, parity with the hot folder's caption_job)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.shard_plan import chunks_of
from shared.cli.progress import shard_progress_line
from shared.core.attempts import Attempts
from shared.core.broker import redis_client
from shared.core.errors import DecodeError
from shared.core.keys import KOMBU_UNACKED_INDEX, keys_for
from shared.core.messages import CaptionOptions, ShardJob, shard_job_id
from shared.core.outcomes import Outcome
from shared.core.shard_board import ShardBoard, ShardEntry, ShardState, snapshot_of
from shared.core.status import render
from shared.core.thresholds import outcome_for
from shared.shards.refs import Sample, ShardRef
from tests.integration.helpers import image_bytes
from workers.captioning.batcher import Batcher
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.shard_samples import ShardPipeline, sample_job
from workers.captioning.shard_task import SHARDS_AT_ONCE, NoTurn, ShardWorker
from workers.captioning.task import caption_job
from workers.tiny.images import tiny_images

OPTIONS = CaptionOptions(prompts=("detailed",), max_new_tokens=4, score=True)


def _job(**overrides: object) -> ShardJob:
    ref = ShardRef(url="s3://bucket/shards/00001.tar", name="00001", kind="tar", size=123456789)
    values: dict[str, object] = {
        "job_id": shard_job_id(ref.url, 0, None, "ab" * 32),
        "shard": ref.to_dict(),
        "start": 0,
        "stop": None,
        "chunk": "00001",
        "output_url": "s3://bucket/out",
        "clip_failed_url": "s3://bucket/failed",
        "captions_url": "s3://bucket/captions",
        "shard_output": "full",
        "options": OPTIONS,
        "settings_hash": "ab" * 32,
        "enqueued_at": 1.0,
    }
    values.update(overrides)
    return ShardJob(**values)  # type: ignore[arg-type]


def test_a_shard_job_is_a_reference_of_a_few_hundred_bytes_and_round_trips() -> None:
    job = _job()
    encoded = job.encode()
    assert len(encoded.encode()) < 1024
    assert ShardJob.decode(encoded) == job
    assert shard_job_id(job.url, 0, None, "cd" * 32) != job.job_id  # other settings: another job
    assert shard_job_id(job.url, 0, None, "ab" * 32) == job.job_id  # stable


@pytest.mark.parametrize(
    ("field", "value"),
    [("job_id", "../x"), ("shard_output", "images"), ("chunk", "../evil"), ("start", -1), ("stop", -5)],
)
def test_a_shard_job_with_a_bad_field_is_refused(field: str, value: object) -> None:
    data = _job().to_dict()
    data[field] = value
    with pytest.raises(DecodeError):
        ShardJob.from_dict(data)


def test_the_threshold_rule_is_the_routers() -> None:
    assert outcome_for(ok=False, score=99.0, threshold=1.0) is Outcome.ERRORS
    assert outcome_for(ok=True, score=None, threshold=15.0) is Outcome.OUTPUT
    assert outcome_for(ok=True, score=3.0, threshold=None) is Outcome.OUTPUT
    assert outcome_for(ok=True, score=15.0, threshold=15.0) is Outcome.OUTPUT
    assert outcome_for(ok=True, score=14.99, threshold=15.0) is Outcome.CLIP_FAILED


def test_chunks_cut_only_what_can_be_counted() -> None:
    ref = ShardRef(url="/d/a.parquet", name="a", kind="parquet")
    assert chunks_of(ref, 10, 4) == [("a-00000", 0, 4), ("a-00001", 4, 8), ("a-00002", 8, 10)]
    assert chunks_of(ref, 4, 4) == [("a", 0, None)]
    assert chunks_of(ref, None, 4) == [("a", 0, None)]  # a tar: read to its end
    assert chunks_of(ref, 10, None) == [("a", 0, None)]


def test_the_snapshot_counts_samples_and_shards_and_estimates_the_rest() -> None:
    entries = [
        ShardEntry(ShardState.DONE, "a", None, {"output": 8, "errors": 2}),
        ShardEntry(ShardState.RUNNING, "b", None, {"output": 3}),
        ShardEntry(ShardState.QUEUED, "c", 40),
        ShardEntry(ShardState.FAILED, "d", None, {}, reason="died"),
    ]
    snap = snapshot_of(entries, samples_per_s=5.0)
    assert snap.shards == {
        ShardState.QUEUED: 1,
        ShardState.RUNNING: 1,
        ShardState.DONE: 1,
        ShardState.FAILED: 1,
    }
    assert snap.samples == {Outcome.OUTPUT: 11, Outcome.CLIP_FAILED: 0, Outcome.ERRORS: 2}
    # b: a tar of unknown size, taken as the done shards' mean (10): 7 left; c: 40 known.
    assert snap.remaining_samples == 47 and snap.eta_s == 9.4
    unknown = snapshot_of([ShardEntry(ShardState.QUEUED, "t")], samples_per_s=5.0)
    assert unknown.remaining_samples is None and unknown.eta_s is None


@pytest.fixture
def board(redis_url: str) -> Iterator[ShardBoard]:
    found = ShardBoard(redis_client(redis_url, decode_responses=True), keys_for(""))
    yield found
    found.close()


def test_the_board_keeps_entries_and_a_rate_in_redis(board: ShardBoard) -> None:
    board.plan({"j1": ShardEntry(ShardState.QUEUED, "a", 10), "j2": ShardEntry(ShardState.QUEUED, "b")})
    board.update("j1", ShardEntry(ShardState.RUNNING, "a", 10, {"output": 6}), new_samples=6)
    board.update("j1", ShardEntry(ShardState.DONE, "a", 10, {"output": 9, "errors": 1}), new_samples=4)
    entries = board.entries()
    assert entries["j1"].state is ShardState.DONE and entries["j1"].samples == 10
    snap = board.snapshot(window_s=10.0)
    assert snap.samples[Outcome.OUTPUT] == 9 and snap.samples_per_s == pytest.approx(1.0)
    board.clear()
    assert board.entries() == {}


def test_a_lease_is_one_workers_until_it_expires(board: ShardBoard) -> None:
    assert board.take_lease("j", "w1", ttl_s=1)
    assert not board.take_lease("j", "w2", ttl_s=1)
    assert not board.take_lease("j", "w1", ttl_s=1)  # a second delivery to w1 waits too
    board.renew_lease("j", "w2", ttl_s=1)  # not w2's to renew
    assert not board.take_lease("j", "w2", ttl_s=1)
    time.sleep(1.2)  # w1 died: its lease runs out
    assert board.take_lease("j", "w2", ttl_s=5)
    board.release_lease("j", "w1")  # not w1's any more: kept
    assert not board.take_lease("j", "w1", ttl_s=5)
    board.release_lease("j", "w2")
    assert board.take_lease("j", "w1", ttl_s=5)


def test_holding_a_message_moves_it_out_of_the_visibility_timeout(board: ShardBoard, redis_url: str) -> None:
    client = redis_client(redis_url, decode_responses=True)
    try:
        client.zadd(KOMBU_UNACKED_INDEX, {"tag-1": 100.0})
        payload = {"headers": {"id": "task-1"}, "body": ""}
        client.hset("unacked", "tag-1", json.dumps([payload, "", "shards"]))
        assert board.delivery_tag_of("task-1") == "tag-1"
        assert board.delivery_tag_of("task-2") is None
        board.hold_message("tag-1")
        assert float(client.zscore(KOMBU_UNACKED_INDEX, "tag-1") or 0) > time.time() - 5
        board.hold_message("tag-gone")  # acked meanwhile: not brought back
        assert client.zscore(KOMBU_UNACKED_INDEX, "tag-gone") is None
    finally:
        client.close()


def _samples(n: int) -> list[Sample]:
    pngs = [image_bytes(image) for image in tiny_images(n, seed=3)]
    samples = [
        Sample(key=f"k{i:03d}", index=i, member=f"k{i:03d}.png", image=b, image_ext="png")
        for i, b in enumerate(pngs)
    ]
    samples[5] = Sample(
        key="k005", index=5, member="k005.png", image=b"", image_ext="png", error="no image member"
    )
    return samples


def test_samples_come_back_in_order_with_the_hot_folders_results_and_bounded_memory(
    engine: Engine, batcher: Batcher[CaptionOptions, Prepared, Captioned]
) -> None:
    samples = _samples(24)
    window = 6
    pipeline = ShardPipeline(engine, batcher, worker="w1", window=window, prepare_threads=3)
    pulled = 0
    most_held = 0
    lock = threading.Lock()

    def source() -> Iterator[Sample]:
        nonlocal pulled
        for sample in samples:
            with lock:
                pulled += 1
            yield sample

    job = _job(options=OPTIONS)
    results = []
    try:
        for taken, (sample, result) in enumerate(pipeline.results(job, source()), 1):
            most_held = max(most_held, pulled - taken + 1)
            results.append((sample, result))
    finally:
        pipeline.stop()
    assert [s.key for s, _ in results] == [s.key for s in samples]
    # At most the window in flight, plus the one sample being read.
    assert most_held <= window + 1
    bad = results[5][1]
    assert not bad.ok and bad.error_reason == "no image member"
    # The same caption, entities and score as the hot folder's caption_job on the same bytes.
    for sample, result in results[:8]:
        if not sample.ok:
            continue
        one = sample_job(job, sample)
        hot = caption_job(one, engine, batcher, worker="w1", image_bytes=sample.image)
        assert (result.caption, result.entities) == (hot.caption, hot.entities)
        # Batched with other samples or alone: float32 rounding over CLIP's dot products of a
        # few dozen terms (~64 x 1.2e-7 relative), nothing more.
        assert result.score == pytest.approx(hot.score, rel=1e-5)


@pytest.fixture
def shard_worker(
    engine: Engine, batcher: Batcher[CaptionOptions, Prepared, Captioned], redis_url: str
) -> Iterator[ShardWorker]:
    client = redis_client(redis_url)
    pipeline = ShardPipeline(engine, batcher, worker="w1", window=4, prepare_threads=2)
    board = ShardBoard(redis_client(redis_url, decode_responses=True), keys_for(""))
    worker = ShardWorker(
        pipeline,
        board,
        Attempts(client, keys_for(""), "shards"),
        worker="w1",
        max_worker_deaths=3,
        visibility_timeout_s=9,
        turn_wait_s=0.2,
    )
    yield worker
    pipeline.stop()
    board.close()
    client.close()


def _local_job(tmp_path: Path, n: int = 3) -> ShardJob:
    pngs = [image_bytes(image) for image in tiny_images(n, seed=4)]
    path = tmp_path / "in" / "a.tar"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w") as tar:
        for i, data in enumerate(pngs):
            info = tarfile.TarInfo(f"k{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ref = ShardRef(url=str(path), name="a", kind="tar")
    return _job(
        job_id=shard_job_id(ref.url, 0, None, "ab" * 32),
        shard=ref.to_dict(),
        chunk="a",
        output_url=str(tmp_path / "out"),
        clip_failed_url=str(tmp_path / "failed"),
        captions_url=str(tmp_path / "captions"),
        threshold=-1000.0,
    )


def test_a_shard_its_worker_died_on_too_often_is_failed_with_a_report_and_no_marker(
    shard_worker: ShardWorker, tmp_path: Path, redis_url: str
) -> None:
    job = _local_job(tmp_path)
    client = redis_client(redis_url)
    # Three starts by processes that died on it: each left its start record behind.
    dead = {f"gone-host/{pid}/0000/0": "beside" for pid in (101, 102, 103)}
    client.hset(keys_for("").attempts("shards", job.job_id), mapping=dead)
    client.close()
    shard_worker.handle(job, task_id=None, final_try=False)
    entry = shard_worker.board.entry(job.job_id)
    assert entry is not None and entry.state is ShardState.FAILED and "died 3 times" in entry.reason
    report = json.loads((tmp_path / "captions" / "_failed" / "a.json").read_text())
    assert report["reason"] == entry.reason and report["source"] == job.url
    assert not (tmp_path / "captions" / "_done").exists() and not (tmp_path / "out").exists()


def test_a_second_delivery_waits_for_the_live_lease_and_does_not_redo_the_shard(
    shard_worker: ShardWorker, tmp_path: Path
) -> None:
    job = _local_job(tmp_path)
    board = shard_worker.board
    assert board.take_lease(job.job_id, "w-other", ttl_s=30)  # another worker has it
    board.update(job.job_id, ShardEntry(ShardState.RUNNING, "a", worker="w-other"))
    second = threading.Thread(
        target=shard_worker.handle, args=(job,), kwargs={"task_id": None, "final_try": False}
    )
    second.start()
    time.sleep(1.5)
    assert second.is_alive()  # waiting, not working: nothing written
    assert not (tmp_path / "out").exists()
    board.update(job.job_id, ShardEntry(ShardState.DONE, "a", counts={"output": 3}))
    board.release_lease(job.job_id, "w-other")
    second.join(timeout=10)
    assert not second.is_alive() and not (tmp_path / "out").exists()


def test_a_delivery_with_no_free_turn_is_given_back_untouched(
    shard_worker: ShardWorker, tmp_path: Path, redis_url: str
) -> None:
    job = _local_job(tmp_path)
    taken = [shard_worker.turns.take() for _ in range(SHARDS_AT_ONCE)]
    assert all(taken)  # this worker's share is busy
    try:
        with pytest.raises(NoTurn):
            shard_worker.handle(job, task_id=None, final_try=False)
    finally:
        for _ in taken:
            shard_worker.turns.give()
    client = redis_client(redis_url)
    try:
        assert client.get(keys_for("").attempts("shards", job.job_id)) is None  # not a start
    finally:
        client.close()
    assert shard_worker.board.take_lease(job.job_id, "w-other", ttl_s=5)  # no lease left held
    assert shard_worker.board.entry(job.job_id) is None and not (tmp_path / "out").exists()


def test_a_shard_job_files_every_sample_commits_then_marks_and_counts_in_prometheus(
    shard_worker: ShardWorker, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    def filed() -> float:
        return REGISTRY.get_sample_value("kcap_shard_samples_filed_total", {"outcome": "output"}) or 0.0

    before = filed()
    job = _local_job(tmp_path)
    shard_worker.handle(job, task_id=None, final_try=False)
    entry = shard_worker.board.entry(job.job_id)
    assert entry is not None and entry.state is ShardState.DONE and entry.counts == {"output": 3}
    marker = json.loads((tmp_path / "captions" / "_done" / "a.json").read_text())
    assert marker["counts"] == {"output": 3} and marker["settings_hash"] == job.settings_hash
    with tarfile.open(tmp_path / "out" / "a.tar") as tar:
        assert sorted(tar.getnames()) == sorted(
            f"k{i}.{ext}" for i in range(3) for ext in ("json", "png", "txt")
        )
    assert filed() - before == 3
    assert board_lease_free(shard_worker, job)


def board_lease_free(worker: ShardWorker, job: ShardJob) -> bool:
    """The lease was given back: another worker could take the job at once."""
    free = worker.board.take_lease(job.job_id, "w-next", ttl_s=5)
    worker.board.release_lease(job.job_id, "w-next")
    return free


def test_status_and_the_live_display_show_samples_and_shards() -> None:
    snap = snapshot_of(
        [
            ShardEntry(ShardState.DONE, "a", 5, {"output": 4, "errors": 1}),
            ShardEntry(ShardState.QUEUED, "b", 5),
        ],
        samples_per_s=2.5,
    )
    line = shard_progress_line(snap)
    assert "output 4" in line and "errors 1" in line and "done 1" in line and "remaining 1" in line
    assert "2.50 samples/s" in line and "ETA 2s" in line
    report = {
        "broker": "redis://x",
        "queue_prefix": "",
        "queues": {},
        "unacked": 0,
        "in_flight": 0,
        "outcomes": {"output": 0, "clip_failed": 0, "errors": 0},
        "routed": 0,
        "images_per_s": 0.0,
        "eta_s": None,
        "dead_letters": {"count": 0, "newest": []},
        "shards": snap.to_dict(),
    }
    text = render(report)
    assert "shards      done 1, running 0, failed 0, remaining 1" in text
    assert "samples     output 4, clip-failed 0, errors 1; 2.50 samples/s (last minute), ETA 2s" in text


def test_the_role_users_reach_the_shard_queue_and_board() -> None:
    from shared.core.redis_acl import role_rules

    gpu = role_rules("kcap-gpu", queue_prefix="one-").split()
    assert {"~one-shards*", "~kcap:one-attempts:one-shards:*", "~kcap:one-shard*"} <= set(gpu)
    keys = keys_for("one-")
    assert keys.shards.startswith("kcap:one-shard") and keys.shard_lease("j").startswith("kcap:one-shard")
    assert "~one-shards*" in role_rules("kcap-storage", queue_prefix="one-").split()
