"""kcap's defaults against the original script, computed straight against transformers.

The reference functions below are the original script's lines, kept as it wrote them; kcap's
caption and routing score must equal what they give on the same image (fp32, CPU).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel

from shared.core.messages import Job
from shared.core.outcomes import Outcome
from shared.core.settings import Settings
from tests.integration.helpers import image_bytes, job_for
from tests.tolerances import float32_spread, score_spreads
from workers.captioning.batcher import Batcher
from workers.captioning.engine import Engine
from workers.captioning.scorers.clip import Scorer, original_slices
from workers.captioning.task import caption_job
from workers.routing.router import Router
from workers.tiny.images import tiny_images

CPU = torch.device("cpu")
# Not 100: a score computed with a fixed 100 instead of the model's own scale shows.
LOGIT_SCALE = 37.0

# Captions of 1, 2 and 6 slices of 77 characters, in words the tiny tokenizer knows whole.
ONE = "a small brown dog runs across the green field in the morning."
TWO = ONE + " two grey cats sleeping on a wooden kitchen table near the window."
SIX = " ".join(
    [
        TWO,
        "an oil painting of a city at night with bright yellow lights.",
        "a watercolor sketch of mountains under a cloudy sky. the old man reads a newspaper.",
        "a bowl of fresh fruit with apples, oranges and bananas on a park bench.",
        "children playing football on a sandy beach near the ocean at sunset.",
    ]
)


def original_caption(processor: Any, model: Any, prompt: str, image: Image.Image, max_new_tokens: int) -> str:
    """The original script's caption, with its max_new_tokens=128 as a parameter."""
    inputs = processor(text=prompt, images=image, return_tensors="pt").to(CPU)
    generated_ids = model.generate(
        pixel_values=inputs["pixel_values"],
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        image_embeds=None,
        image_embeds_position_mask=inputs["image_embeds_position_mask"],
        use_cache=True,
        max_new_tokens=max_new_tokens,
    )
    generated_text = processor.batch_decode(generated_ids, skip_special_tokens=True)[0]
    processed_text, _entities = processor.post_process_generation(generated_text)
    return str(processed_text.replace(prompt, "").strip())


def original_score(clip_processor: Any, clip_model: Any, content: str, image: Image.Image) -> float:
    """The original script's score of a caption (its `content`) against its image."""
    texts = [content[i : i + 77] for i in range(0, len(content), 77)]
    inputs = clip_processor(text=texts, images=image, return_tensors="pt", padding=True).to(CPU)
    with torch.no_grad():
        outputs = clip_model(**inputs)
    return float(outputs.logits_per_image.mean().item())


@pytest.fixture(scope="module")
def clip_dir(tiny_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP with its own logit scale set to LOGIT_SCALE."""
    _, clip = tiny_models
    model = CLIPModel.from_pretrained(clip)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    out = tmp_path_factory.mktemp("clip37")
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(clip).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reference_clip(clip_dir: Path) -> tuple[Any, Any]:
    return AutoProcessor.from_pretrained(clip_dir), CLIPModel.from_pretrained(clip_dir).eval()


@pytest.fixture(scope="module")
def engine(tiny_models: tuple[Path, Path], clip_dir: Path) -> Engine:
    kosmos, _ = tiny_models
    return Engine.load(
        Settings(caption_model=str(kosmos), clip_model=str(clip_dir), dtype="float32"), eager_scorer=True
    )


def _job(image: Image.Image, settings: Settings, rel: str = "x.png") -> Job:
    return job_for(image_bytes(image), settings.caption_options(), rel)


def test_the_captions_cut_into_1_2_and_6_slices() -> None:
    assert [len(original_slices(c)) for c in (ONE, TWO, SIX)] == [1, 2, 6]


def test_the_routing_score_is_the_original_statistic_and_a_batch_equals_single_images(
    engine: Engine, reference_clip: tuple[Any, Any]
) -> None:
    scorer = engine.scorer()
    images = tiny_images(3, seed=17)
    captions = [ONE, TWO, SIX]
    pixels = [scorer.preprocess(image) for image in images]
    batched = scorer.score(pixels, captions)
    singles = [scorer.score([p], [c])[0] for p, c in zip(pixels, captions, strict=True)]
    for image, caption, got, alone in zip(images, captions, batched, singles, strict=True):
        # Each number two ways, to float32 rounding at its factor's scale (tests/tolerances.py).
        spreads = score_spreads(scorer, slices=got.slices, chunks=got.chunks)
        expected = original_score(*reference_clip, caption, image)
        assert got.routing("original") == pytest.approx(expected, rel=0, abs=spreads["original"]), caption
        assert got.slices == len(original_slices(caption))
        # The same numbers whether the image is scored in a batch or alone.
        assert got.original == pytest.approx(alone.original, rel=0, abs=spreads["original"])
        assert got.sentence_chunks == pytest.approx(
            alone.sentence_chunks, rel=0, abs=spreads["sentence_chunks"]
        )
        assert got.routing("sentence-chunks") == got.sentence_chunks
    # The other statistic is a different number (100 x cosine over sentence chunks), by more
    # than the two could differ by rounding.
    spreads = score_spreads(scorer, slices=batched[2].slices, chunks=batched[2].chunks)
    gap = spreads["original"] + spreads["sentence_chunks"]
    assert abs(batched[2].sentence_chunks - batched[2].original) > gap


def test_a_scorer_in_bf16_keeps_the_checkpoints_float32_logit_scale(clip_dir: Path) -> None:
    scorer = Scorer(str(clip_dir), device=CPU, dtype=torch.bfloat16)
    assert scorer.model.logit_scale.dtype == torch.bfloat16
    # ln 37 kept in float32 (relative error u, which exp turns into ln 37 x u) and exp'd in
    # float32 (within an ulp, eps): at most 37 x (ln 37 + 1) x eps.
    assert float(scorer.logit_scale) == pytest.approx(
        LOGIT_SCALE, rel=0, abs=float32_spread(math.ceil(math.log(LOGIT_SCALE)) + 1, scale=LOGIT_SCALE)
    )


def test_by_default_kcap_writes_and_scores_what_the_original_script_did(
    engine: Engine, tiny_models: tuple[Path, Path], reference_clip: tuple[Any, Any]
) -> None:
    kosmos, _ = tiny_models
    processor = AutoProcessor.from_pretrained(kosmos)
    model = AutoModelForImageTextToText.from_pretrained(kosmos).eval()
    settings = Settings(clip_failed_dir=Path("unused"), max_new_tokens=40)
    options = settings.caption_options()
    assert options.score and options.route_score == "original"
    images = tiny_images(4, seed=23)
    done = engine.run_batch(
        options, [engine.prepare(_job(image, settings, f"{i}.png")) for i, image in enumerate(images)]
    )
    assert len({d.text for d in done}) > 1  # a mix-up between images would show
    assert max(len(original_slices(d.text)) for d in done) >= 2
    for image, captioned in zip(images, done, strict=True):
        assert captioned.text == original_caption(processor, model, options.prompt, image, 40)
        assert captioned.scores is not None
        spread = score_spreads(
            engine.scorer(), slices=captioned.scores.slices, chunks=captioned.scores.chunks
        )["original"]
        assert captioned.score == pytest.approx(
            original_score(*reference_clip, captioned.text, image), rel=0, abs=spread
        )


@pytest.mark.parametrize("method", ["original", "sentence-chunks"])
def test_the_chosen_score_routes_at_the_threshold(engine: Engine, tmp_path: Path, method: str) -> None:
    settings = Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        clip_failed_dir=tmp_path / "failed",
        route_score=method,
        max_new_tokens=30,
    )
    batcher = Batcher(engine.run_batch, max_size=4, max_wait_s=0.01).start()
    try:
        result = caption_job(_job(tiny_images(1, seed=31)[0], settings), engine, batcher, worker="test")
    finally:
        batcher.stop()
    assert result.score_original is not None and result.score_sentence_chunks is not None
    chosen, other = (
        (result.score_original, result.score_sentence_chunks)
        if method == "original"
        else (result.score_sentence_chunks, result.score_original)
    )
    assert result.score == chosen and result.score_method == method
    assert abs(chosen - other) > 1.0  # the choice matters for this image

    def outcome(threshold: float) -> Outcome:
        return Router(settings.replace(threshold=threshold)).outcome_for(result)

    assert outcome(chosen) == Outcome.OUTPUT  # at the threshold: passes, as `score < 15` failed
    assert outcome(math.nextafter(chosen, math.inf)) == Outcome.CLIP_FAILED
    between = (chosen + other) / 2  # the other score would route this image the other way
    assert outcome(between) == (Outcome.OUTPUT if chosen > other else Outcome.CLIP_FAILED)
