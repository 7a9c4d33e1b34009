"""Scorers by family on tiny real checkpoints: CLIP's numbers unchanged, SigLIP's sigmoid score."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.core.errors import ConfigError
from tests.tolerances import score_spreads
from workers.captioning.scorers.clip import Scorer
from workers.captioning.scorers.registry import load_scorer
from workers.captioning.scorers.siglip import SiglipScorer
from workers.tiny.families import CAPTIONERS, SCORERS
from workers.tiny.images import tiny_images

CPU = torch.device("cpu")
CAPTIONS = [
    "a small brown dog runs across the green field. it is morning.",
    "two grey cats sleeping on a wooden kitchen table",
    "",
]


@pytest.fixture(scope="module")
def scorers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scorers")
    return {family: build(root / family) for family, build in SCORERS.items()}


@pytest.mark.parametrize("family", sorted(SCORERS))
def test_each_scorer_family_scores_a_batch_as_single_images(family: str, scorers: dict[str, Path]) -> None:
    scorer = load_scorer(str(scorers[family]), device=CPU, dtype=torch.float32)
    assert scorer.family == family
    images = tiny_images(3, seed=2, size=(64, 40))
    images[1] = images[1].resize((30, 70))  # SigLIP 2 keeps the aspect ratio: other patch grids
    items = [scorer.preprocess(image) for image in images]
    batch = scorer.score(items, CAPTIONS)
    single = [scorer.score([item], [caption])[0] for item, caption in zip(items, CAPTIONS, strict=True)]
    for one, many in zip(single, batch, strict=True):
        assert one.family == many.family == family
        # A batch and one image round in other places: by at most these (tests/tolerances.py).
        spreads = score_spreads(scorer, slices=many.slices, chunks=many.chunks)
        spread = spreads["sentence_chunks"]
        assert many.sentence_chunks == pytest.approx(one.sentence_chunks, rel=0, abs=spread)
        if family == "clip":
            assert isinstance(scorer, Scorer)
            assert many.sigmoid is None and many.original is not None
            assert many.routing("original") == many.original and many.statistic("original") == "original"
        else:
            assert isinstance(scorer, SiglipScorer)
            assert many.original is None and many.sigmoid is not None
            assert 0.0 <= many.sigmoid <= 1.0
            assert many.sigmoid == pytest.approx(one.sigmoid, rel=0, abs=spreads["sigmoid"])
            # The default route is the family's own statistic, and the record says so.
            assert many.routing("original") == many.sigmoid and many.statistic("original") == "sigmoid"
        assert many.routing("sentence-chunks") == many.sentence_chunks
        assert many.statistic("sentence-chunks") == "sentence-chunks"


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_siglip_score_is_the_models_own_match_probability(family: str, scorers: dict[str, Path]) -> None:
    from transformers import AutoModel, AutoProcessor

    path = str(scorers[family])
    scorer = load_scorer(path, device=CPU, dtype=torch.float32)
    image = tiny_images(1, seed=8)[0]
    caption = "a photo of a red circle on a blue background"
    got = scorer.score([scorer.preprocess(image)], [caption])[0]
    # The model's own forward: logits_per_image = exp(scale) x cosine + bias, max_length padding.
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    # The checkpoint's image processor as configured (Siglip2Processor's call would put its
    # class defaults, 256 patches of 16 px, over the tiny checkpoint's own sizes).
    inputs = {
        **processor.image_processor(images=[image], return_tensors="pt"),
        **processor.tokenizer([caption], padding="max_length", max_length=64, return_tensors="pt"),
    }
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    # The same model on the same inputs, its cosine and logit computed its own way.
    spread = score_spreads(scorer, slices=0, chunks=got.chunks)["sigmoid"]
    assert got.sigmoid == pytest.approx(float(torch.sigmoid(logits)[0, 0]), rel=0, abs=spread)


def test_a_caption_model_as_scorer_fails_with_the_supported_families(tmp_path: Path) -> None:
    kosmos = CAPTIONERS["kosmos-2"](tmp_path / "kosmos")
    with pytest.raises(
        ConfigError, match=r"'kosmos-2'.*clip \(clip\), siglip \(siglip\), siglip2 \(siglip2\)"
    ):
        load_scorer(str(kosmos), device=CPU, dtype=torch.float32)


@pytest.mark.parametrize("family", sorted(SCORERS))
def test_float32_scores_keep_within_the_derived_bound_of_a_float64_computation(
    family: str, scorers: dict[str, Path]
) -> None:
    """The tolerances of tests/tolerances.py hold against the same model run in float64 (its
    towers all but exact; the cosine after them is float32 in both, as the scorer casts it).
    On this machine the float32 scores are up to about 1.3e-5 off at logit scale 100: over
    the 1e-5 some tests allowed once, and far inside the bound (worst-case, 2.8e-2 here)."""
    single = load_scorer(str(scorers[family]), device=CPU, dtype=torch.float32)
    double = load_scorer(str(scorers[family]), device=CPU, dtype=torch.float64)
    images = tiny_images(6, seed=3)
    captions = [
        f"{'a small brown dog runs across the green field. it is morning. ' * n}" for n in range(1, 7)
    ]
    got = single.score([single.preprocess(image) for image in images], captions)
    near_exact = double.score([double.preprocess(image) for image in images], captions)
    for a, b in zip(got, near_exact, strict=True):
        spreads = score_spreads(single, slices=a.slices, chunks=a.chunks)
        for field in ("original", "sentence_chunks", "clipscore", "sigmoid"):
            if getattr(a, field) is not None:
                assert getattr(a, field) == pytest.approx(getattr(b, field), rel=0, abs=spreads[field]), field
