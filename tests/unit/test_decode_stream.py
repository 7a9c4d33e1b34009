"""The DecodeStream: images submitted while others decode are prefilled into freed slots, and
every caption equals transformers' greedy `generate` (fp32, CPU) and its score equals a
batch's.

The model is the tiny Kosmos-2 in its "grounded" mode (captions end after varied lengths
and carry grounding tags), as in test_kosmos2_decoder.py; images are submitted from several
threads, the way Celery's pool threads submit them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import pytest

from shared.core.decoding import Decoder
from shared.core.messages import CaptionOptions
from shared.core.prompts import PRESETS
from shared.core.settings import Settings
from tests.tolerances import score_spreads
from tests.unit.small_gpu import small_gpu_step
from workers.captioning.decode_stream import DecodeStream
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.families.kosmos2.captioner import Caption
from workers.tiny.images import tiny_images
from workers.tiny.kosmos2 import build_kosmos2

N_IMAGES = 40
MAX_NEW = 128


@pytest.fixture(scope="module")
def grounded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from workers.tiny.clip import build_clip

    root = tmp_path_factory.mktemp("stream-models")
    return (
        build_kosmos2(root / "kosmos2", preset="tiny", captions="grounded"),
        build_clip(root / "clip", preset="tiny"),
    )


def _engine(models: tuple[Path, Path], *, slots: int, **more: object) -> Engine:
    kosmos, clip = models
    settings = Settings(
        caption_model=str(kosmos), clip_model=str(clip), dtype="float32", decoder_slots=slots, **more
    )
    return Engine.load(settings, eager_scorer=True)


@pytest.fixture(scope="module")
def engine(grounded: tuple[Path, Path]) -> Engine:
    """Only for preparing images and the references (its own decoder is never streamed)."""
    return _engine(grounded, slots=8)


@pytest.fixture(scope="module")
def items(engine: Engine) -> list[Prepared]:
    prepared = []
    for index, image in enumerate(tiny_images(N_IMAGES, seed=21)):
        prepared.append(
            Prepared(
                job_id=f"job{index}",
                caption_pixels=engine.captioner.preprocess(image),
                clip_pixels=engine.scorer().preprocess(image),
                width=image.width,
                height=image.height,
                decode_s=0.0,
            )
        )
    return prepared


def _options(preset: str, **more: object) -> CaptionOptions:
    return replace(CaptionOptions(prompts=(PRESETS[preset],), max_new_tokens=MAX_NEW), **more)


@pytest.fixture(scope="module")
def reference(engine: Engine, items: list[Prepared]) -> Callable[[str], list[Caption]]:
    """generate's captions (greedy, fp32) per preset, cached."""
    done: dict[str, list[Caption]] = {}

    def get(preset: str) -> list[Caption]:
        if preset not in done:
            pixels = [item.caption_pixels for item in items]
            ids = engine.captioner.forward(pixels, prompt=PRESETS[preset], max_new_tokens=MAX_NEW)
            done[preset] = engine.captioner.postprocess(ids, max_new_tokens=MAX_NEW)
        return done[preset]

    return get


@pytest.fixture
def stream_for(grounded: tuple[Path, Path]) -> Iterator[Callable[[int], DecodeStream]]:
    streams: list[DecodeStream] = []

    def make(slots: int) -> DecodeStream:
        stream = DecodeStream(_engine(grounded, slots=slots), max_size=16, max_wait_s=0.02).start()
        streams.append(stream)
        return stream

    yield make
    for stream in streams:
        stream.stop()


def _plain(captioned: Captioned | Caption) -> tuple[object, ...]:
    return (
        captioned.text,
        [(e.phrase, e.start, e.end, e.boxes) for e in captioned.entities],
        captioned.truncated,
    )


def _submit_over_time(
    stream: DecodeStream, keyed: list[tuple[CaptionOptions, Prepared]], *, threads: int
) -> tuple[list[Future[Captioned]], int]:
    """The first few at once, then the rest from `threads` threads while those decode (as
    Celery's pool threads submit). Returns the futures in input order and how many were
    submitted while rows were decoding."""
    futures: list[Future[Captioned] | None] = [None] * len(keyed)
    mid_flight = 0
    lock = threading.Lock()
    head = 3
    for index in range(head):
        futures[index] = stream.submit(*keyed[index])
    deadline = time.monotonic() + 30
    while stream.decoder.stats.steps < 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # decoding has started

    def feed(part: list[int]) -> None:
        nonlocal mid_flight
        for index in part:
            busy = stream.decoder.busy > 0
            futures[index] = stream.submit(*keyed[index])
            with lock:
                mid_flight += busy
            time.sleep(0.002)

    rest = list(range(head, len(keyed)))
    workers = [threading.Thread(target=feed, args=(rest[t::threads],)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(f is not None for f in futures)
    return [f for f in futures if f is not None], mid_flight


@pytest.mark.parametrize("preset", ["detailed", "brief"])
@pytest.mark.parametrize("slots", [1, 7])
def test_images_arriving_mid_flight_get_generate_captions(
    stream_for: Callable[[int], DecodeStream],
    items: list[Prepared],
    reference: Callable[[str], list[Caption]],
    slots: int,
    preset: str,
) -> None:
    stream = stream_for(slots)
    options = _options(preset)
    futures, mid_flight = _submit_over_time(stream, [(options, item) for item in items], threads=4)
    got = [future.result(timeout=120) for future in futures]
    assert [_plain(c) for c in got] == [_plain(c) for c in reference(preset)]
    assert {c.decoder for c in got} == {Decoder.KCAP_STATIC.value}
    assert mid_flight >= N_IMAGES // 2, "most images arrived while others were decoding"
    stats = stream.decoder.stats
    # Freed slots took images that arrived later: many small prefills, not one per batch,
    # and the slots stayed busy.
    assert stats.prefills >= N_IMAGES // max(slots, 4)
    if slots > 1:
        assert stats.occupancy > 0.6, stats


def test_each_caption_is_handed_back_when_its_row_ends(
    stream_for: Callable[[int], DecodeStream], items: list[Prepared]
) -> None:
    """A short caption's future resolves while longer rows are still decoding."""
    stream = stream_for(7)
    busy_at_resolve: list[int] = []
    futures = [stream.submit(_options("detailed"), item) for item in items[:7]]
    for future in futures:
        future.add_done_callback(lambda _f: busy_at_resolve.append(stream.decoder.busy))
    for future in futures:
        future.result(timeout=60)
    assert max(busy_at_resolve) > 0
    assert busy_at_resolve[-1] == 0


def test_two_prompts_decode_side_by_side_without_sharing_a_prefill(
    stream_for: Callable[[int], DecodeStream],
    items: list[Prepared],
    reference: Callable[[str], list[Caption]],
) -> None:
    """Each job asks for both presets (two keys), as a job with two prompts does; each
    prefill holds one key's images, and every caption equals its own prompt's generate."""
    stream = stream_for(7)
    decoder = stream.decoder
    prefilled: list[int] = []  # the prompt length of every prefill
    real_admit = decoder.admit

    def recording_admit(rows, pixels, prompt):  # type: ignore[no-untyped-def]
        prefilled.append(prompt.length)
        return real_admit(rows, pixels, prompt)

    decoder.admit = recording_admit  # type: ignore[method-assign]
    keyed = [(_options(preset), item) for item in items for preset in ("detailed", "brief")]
    futures, _ = _submit_over_time(stream, keyed, threads=4)
    got = [future.result(timeout=120) for future in futures]
    assert [_plain(c) for c in got[0::2]] == [_plain(c) for c in reference("detailed")]
    assert [_plain(c) for c in got[1::2]] == [_plain(c) for c in reference("brief")]
    assert len(set(prefilled)) == 2  # each prefill had one prompt; both were prefilled


def test_out_of_memory_halves_the_slots_and_reruns_the_images_in_flight(
    grounded: tuple[Path, Path],
    items: list[Prepared],
    reference: Callable[[str], list[Caption]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mocks a GPU (there is none here to run out of memory): see small_gpu_step."""
    small_gpu_step(monkeypatch, max_rows=4)
    stream = DecodeStream(_engine(grounded, slots=16), max_size=16, max_wait_s=0.02).start()
    try:
        futures, _ = _submit_over_time(stream, [(_options("brief"), item) for item in items[:24]], threads=2)
        got = [future.result(timeout=120) for future in futures]
    finally:
        stream.stop()
    assert stream.decoder.slots == 4
    assert [_plain(c) for c in got] == [_plain(c) for c in reference("brief")[:24]]


def test_scores_of_rows_finished_in_small_groups_equal_a_batchs(
    stream_for: Callable[[int], DecodeStream], engine: Engine, items: list[Prepared]
) -> None:
    """CLIP scores each caption against its own image: scoring the few rows that ended at a
    step gives the numbers a whole batch gives, to float32 rounding: a matmul over 20 rows
    rounds in other places than one over 3 (the Batcher's batches differ from run to run the
    same way). How far, tests/tolerances.py derives from the towers' sizes and each score's
    factor (logit_scale, 100, 2.5), not from the score: 0.343 once came out 1.04e-5 off, over
    a tolerance of 1e-5 that had been set from what passed."""
    stream = stream_for(7)
    options = _options("detailed", score=True)
    futures, _ = _submit_over_time(stream, [(options, item) for item in items[:20]], threads=2)
    streamed = [future.result(timeout=120) for future in futures]
    batch = engine.run_batch(options, items[:20])
    assert max(c.timings["batch_size"] for c in streamed) < 20  # scored in small groups
    assert [c.text for c in streamed] == [c.text for c in batch]
    for got, expected in zip(streamed, batch, strict=True):
        assert got.scores is not None and expected.scores is not None
        assert (got.scores.slices, got.scores.chunks) == (expected.scores.slices, expected.scores.chunks)
        spreads = score_spreads(engine.scorer(), slices=got.scores.slices, chunks=got.scores.chunks)
        for field in ("original", "sentence_chunks", "clipscore"):
            assert getattr(got.scores, field) == pytest.approx(
                getattr(expected.scores, field), rel=0, abs=spreads[field]
            ), field


def test_a_key_the_static_decoder_does_not_run_goes_as_a_batch(
    stream_for: Callable[[int], DecodeStream], items: list[Prepared]
) -> None:
    """Beam search stays with generate: the stream runs those images as a batch."""
    stream = stream_for(7)
    beams = _options("brief", num_beams=2, max_new_tokens=8)
    greedy = _options("brief", max_new_tokens=8)
    futures = [stream.submit(beams, item) for item in items[:3]] + [stream.submit(greedy, items[3])]
    got = [future.result(timeout=60) for future in futures]
    assert [c.decoder for c in got] == ["generate"] * 3 + ["kcap-static"]
    assert {c.timings["batch_size"] for c in got[:3]} == {3}


def test_the_worker_pool_holds_more_jobs_than_the_slots() -> None:
    """With the defaults, images wait in the pool for every slot that frees up."""
    from workers.captioning.worker import pool_threads

    settings = Settings()
    assert pool_threads(settings, streaming=True) > settings.decoder_slots
    assert pool_threads(settings, streaming=False) == 2 * settings.batch_size


def test_a_job_with_two_prompts_through_the_stream_records_the_decoder(
    stream_for: Callable[[int], DecodeStream], engine: Engine
) -> None:
    """caption_job, as the Celery task runs it, over a DecodeStream instead of a Batcher."""
    from tests.integration.helpers import image_bytes, job_for
    from workers.captioning.task import caption_job

    options = CaptionOptions(
        prompts=(PRESETS["detailed"], PRESETS["brief"]), max_new_tokens=MAX_NEW, score=True
    )
    job = job_for(image_bytes(tiny_images(1, seed=5)[0]), options, rel="a.png")
    result = caption_job(job, engine, stream_for(7), worker="w1")
    assert result.ok and result.decoder == Decoder.KCAP_STATIC.value
    assert len(result.captions) == 2 and result.score is not None


def test_a_failing_caption_fails_its_job_and_the_stream_goes_on(
    stream_for: Callable[[int], DecodeStream], items: list[Prepared]
) -> None:
    """An image prepared without CLIP pixels under a scored key cannot be scored: its future
    gets the error (the task retries it), and the next images are captioned as ever."""
    stream = stream_for(7)
    broken = replace(items[0], clip_pixels=None)
    failing = stream.submit(_options("brief", score=True), broken)
    with pytest.raises(RuntimeError, match="without CLIP pixels"):
        failing.result(timeout=60)
    after = stream.submit(_options("brief", score=True), items[1]).result(timeout=60)
    assert after.scores is not None
