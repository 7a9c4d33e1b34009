"""Captioner, scorer and engine on tiny real models, loaded through from_pretrained."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from shared.core.errors import ModelLoadError
from shared.core.messages import CaptionOptions, Entity, Job
from shared.core.settings import Settings
from tests.integration.helpers import image_bytes, job_for
from tests.tolerances import score_spreads
from workers.captioning.engine import Captioned, Engine, Prepared
from workers.captioning.families.kosmos2.captioner import Captioner
from workers.captioning.scorers.clip import Scorer, chunk_caption
from workers.tiny.images import tiny_images

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def engine(tiny_models: tuple[Path, Path]) -> Engine:
    kosmos, clip = tiny_models
    settings = Settings(caption_model=str(kosmos), clip_model=str(clip), dtype="float32")
    return Engine.load(settings, eager_scorer=True)


def _job(data: bytes, rel: str = "x.png", *, score: bool = True, tokens: int = 10) -> Job:
    options = CaptionOptions(prompts=tuple(Settings().prompts), max_new_tokens=tokens, score=score)
    return job_for(data, options, rel)


def _prepared(engine: Engine, n: int, seed: int = 5) -> list[Prepared]:
    return [
        engine.prepare(_job(image_bytes(im), f"{i}.png")) for i, im in enumerate(tiny_images(n, seed=seed))
    ]


OPTIONS = CaptionOptions(prompts=(Settings().prompts[0],), max_new_tokens=10, score=True)


def test_a_batch_gives_the_same_captions_and_scores_as_one_at_a_time(engine: Engine) -> None:
    items = _prepared(engine, 6)
    batched = engine.run_batch(OPTIONS, items)
    singles = [engine.run_batch(OPTIONS, [item])[0] for item in items]
    assert [b.text for b in batched] == [s.text for s in singles]
    for b, s in zip(batched, singles, strict=True):
        assert b.scores is not None
        # The routing score (OPTIONS: the original statistic), to float32 rounding (tests/tolerances.py).
        spread = score_spreads(engine.scorer(), slices=b.scores.slices, chunks=b.scores.chunks)["original"]
        assert b.score == pytest.approx(s.score, rel=0, abs=spread)
    assert len({b.text for b in batched}) > 1  # a mix-up between images would show


def test_forward_returns_only_new_tokens_so_the_prompt_echo_is_gone(engine: Engine) -> None:
    items = _prepared(engine, 2)
    new_ids = engine.captioner.forward(
        [i.caption_pixels for i in items], prompt=OPTIONS.prompt, max_new_tokens=7
    )
    assert new_ids.shape == (2, 7)
    captions = engine.captioner.postprocess(new_ids)
    assert all(c.text and "detailed description" not in c.text for c in captions)


def test_entities_come_out_of_a_known_kosmos2_generation(engine: Engine) -> None:
    # What Kosmos-2 writes after the prompt: tags around a phrase, then its box as patch indices.
    raw = (
        " An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>"
        " warming himself."
    )
    caption = engine.captioner.parse(raw)
    assert caption.text == "An image of a snowman warming himself."
    assert len(caption.entities) == 1
    entity = caption.entities[0]
    assert (entity.phrase, entity.start, entity.end) == ("a snowman", 12, 21)
    assert caption.text[entity.start : entity.end] == "a snowman"
    assert entity.boxes == [[0.3906, 0.0469, 0.9844, 0.8281]]


def test_no_scoring_without_a_clip_failed_folder(engine: Engine) -> None:
    item = engine.prepare(_job(image_bytes(tiny_images(1)[0]), score=False))
    assert item.clip_pixels is None
    (done,) = engine.run_batch(
        CaptionOptions(prompts=(OPTIONS.prompt,), max_new_tokens=5, score=False), [item]
    )
    assert done.score is None and done.text


def _direct_logits(model: CLIPModel, processor: CLIPProcessor, texts: list[str], image: Any) -> torch.Tensor:
    inputs = processor(text=texts, images=image, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        out = model(**inputs)
    # logits_per_image is logit_scale.exp() x cosine; the sentence-chunk score is 100 x cosine.
    return out.logits_per_image[0] / model.logit_scale.exp() * 100.0


def test_the_sentence_chunk_score_equals_a_direct_clip_computation(tiny_models: tuple[Path, Path]) -> None:
    _, clip = tiny_models
    scorer = Scorer(str(clip), device=CPU, dtype=torch.float32)
    model = CLIPModel.from_pretrained(clip).eval()
    processor = CLIPProcessor.from_pretrained(clip)
    images = tiny_images(2, seed=9)
    short = "a red square on a white wall."
    long = " ".join(f"the {w} square sits on a wall near a {w} circle." for w in ["red", "blue", "green"] * 6)
    chunk_lists = [scorer.chunks(short), scorer.chunks(long)]
    assert len(chunk_lists[0]) == 1 and len(chunk_lists[1]) > 1
    got = scorer.score([scorer.preprocess(im) for im in images], [short, long])

    expected_short = _direct_logits(model, processor, [short], images[0]).item()
    expected_long = _direct_logits(model, processor, chunk_lists[1], images[1]).mean().item()
    # Two computations of 100 x cosine (tests/tolerances.py); the direct one divides by the
    # logit scale and multiplies by 100 after, two roundings more.
    spreads = [score_spreads(scorer, slices=0, chunks=len(chunks) + 2) for chunks in chunk_lists]
    assert got[0].sentence_chunks == pytest.approx(expected_short, rel=0, abs=spreads[0]["sentence_chunks"])
    assert got[1].sentence_chunks == pytest.approx(expected_long, rel=0, abs=spreads[1]["sentence_chunks"])
    assert got[1].chunks == len(chunk_lists[1])
    assert got[0].clipscore == pytest.approx(
        2.5 * max(expected_short / 100, 0), rel=0, abs=spreads[0]["clipscore"]
    )


def test_chunks_fit_clips_window_and_break_at_sentences(tiny_models: tuple[Path, Path]) -> None:
    _, clip = tiny_models
    scorer = Scorer(str(clip), device=CPU, dtype=torch.float32)
    sentences = [f"a {c} square sits on a wall near a circle." for c in ["red", "blue", "green"] * 10]
    chunks = scorer.chunks(" ".join(sentences))
    counts = [len(ids) for ids in scorer.tokenizer(chunks, add_special_tokens=False)["input_ids"]]
    assert max(counts) <= 75
    assert all(chunk.endswith(".") for chunk in chunks)  # whole sentences
    assert " ".join(chunks) == " ".join(sentences)  # nothing dropped


def test_a_sentence_longer_than_the_window_is_cut_between_words() -> None:
    words = ["word"] * 200

    def count(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    chunks = chunk_caption(" ".join(words), count, budget=75)
    assert [len(c.split()) for c in chunks] == [75, 75, 50]


def test_out_of_memory_splits_the_batch_and_loses_no_job(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No GPU here, so a CUDA out-of-memory cannot really happen: the error is injected at the
    # forward call for batches over 2 images, which is what a too-large batch does on a GPU.
    # (Greedy Kosmos-2 runs on the static decoder by default, so that is the forward patched;
    # the decoder's own slot halving is tested in test_kosmos2_decoder.py.)
    real_forward = engine.captioner.forward_static
    sizes: list[int] = []

    def forward(pixel_values: list[torch.Tensor], **kwargs: Any) -> torch.Tensor:
        sizes.append(len(pixel_values))
        if len(pixel_values) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(pixel_values, **kwargs)

    monkeypatch.setattr(engine.captioner, "forward_static", forward)
    items = _prepared(engine, 6, seed=21)
    with caplog.at_level(logging.WARNING):
        results = engine.run_batch(OPTIONS, items)
    assert len(results) == 6 and all(r.text for r in results)
    assert sizes == [6, 3, 1, 2, 3, 1, 2]
    assert any("out of memory on a batch of 6" in m and items[0].job_id in m for m in caplog.messages)


def test_a_missing_model_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="--caption-model DIR"):
        Captioner(str(tmp_path / "nope"), device=CPU, dtype=torch.float32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="does not hold a loadable caption model"):
        Captioner(str(tmp_path / "empty"), device=CPU, dtype=torch.float32)


def test_every_model_that_cannot_be_had_is_named_at_once(tmp_path: Path) -> None:
    settings = Settings(caption_model=str(tmp_path / "kosmos"), clip_model=str(tmp_path / "clip"))
    with pytest.raises(ModelLoadError) as raised:
        Engine.load(settings, eager_scorer=True)
    message = str(raised.value)
    assert message.startswith("2 models cannot be had:"), message
    assert f"caption model not found at {tmp_path / 'kosmos'}" in message and "--caption-model DIR" in message
    assert f"CLIP model not found at {tmp_path / 'clip'}" in message and "--clip-model DIR" in message
    assert "kcap demo" not in message  # folders given: no hub to be cut off from


def test_a_scorer_that_is_never_needed_is_not_asked_for(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    kosmos, _ = tiny_models
    settings = Settings(caption_model=str(kosmos), clip_model=str(tmp_path / "clip"))
    assert Engine.load(settings, eager_scorer=False).captioner is not None  # no clip-failed folder, no CLIP


def test_greedy_kosmos2_runs_on_the_static_decoder_and_the_record_says_so(
    tiny_models: tuple[Path, Path], engine: Engine
) -> None:
    """auto: kcap-static for greedy Kosmos-2, with the captions generate writes; beams and
    repetition controls, or --decoder generate, keep generate."""
    kosmos = tiny_models[0]
    forced = Engine(
        Captioner(str(kosmos), device=CPU, dtype=torch.float32, decoder="generate"),
        lambda: engine.scorer(),
        max_pixels=Settings().max_pixels,
    )
    items = _prepared(engine, 5, seed=8)
    static = engine.run_batch(OPTIONS, items)
    reference = forced.run_batch(OPTIONS, items)
    assert {r.decoder for r in static} == {"kcap-static"}
    assert {r.decoder for r in reference} == {"generate"}

    def seen(results: list[Captioned]) -> list[tuple[str, list[Entity], float | None]]:
        return [(r.text, r.entities, r.score) for r in results]

    assert seen(static) == seen(reference)
    for options in (
        CaptionOptions(prompts=OPTIONS.prompts, max_new_tokens=10, num_beams=2),
        CaptionOptions(prompts=OPTIONS.prompts, max_new_tokens=10, repetition_penalty=1.2),
        CaptionOptions(prompts=OPTIONS.prompts, max_new_tokens=10, no_repeat_ngram_size=3),
    ):
        assert {r.decoder for r in engine.run_batch(options, items[:2])} == {"generate"}
