"""kcap's static-cache decoder writes exactly what transformers' greedy `generate` writes.

The model is the tiny Kosmos-2 in its "grounded" mode: captions end after lengths that vary
from image to image and carry grounding tags, so the stopping rule, slot refills and entity
extraction are all exercised. The reference is `generate` (greedy, fp32, CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from shared.core.prompts import PRESETS
from tests.unit.small_gpu import small_gpu_step
from workers.captioning.families.kosmos2.captioner import Caption, Captioner
from workers.captioning.families.kosmos2.kosmos2_decoder import Kosmos2Decoder, PromptInputs, pad_rows
from workers.tiny.images import tiny_images
from workers.tiny.kosmos2 import build_kosmos2

N_IMAGES = 64
MAX_NEW = 128
PAD, EOS = 1, 2


@pytest.fixture(scope="module")
def captioner(tmp_path_factory: pytest.TempPathFactory) -> Captioner:
    path = build_kosmos2(tmp_path_factory.mktemp("kosmos2-grounded"), preset="tiny", captions="grounded")
    return Captioner(str(path), device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def pixels(captioner: Captioner) -> list[torch.Tensor]:
    return [captioner.preprocess(image) for image in tiny_images(N_IMAGES, seed=14)]


Reference = Callable[[str, int], tuple[list[list[int]], list[Caption]]]


@pytest.fixture(scope="module")
def reference(captioner: Captioner, pixels: list[torch.Tensor]) -> Reference:
    """generate's new ids (pads dropped) and captions, per prompt and token limit, cached."""
    done: dict[tuple[str, int], tuple[list[list[int]], list[Caption]]] = {}

    def get(prompt: str, max_new: int) -> tuple[list[list[int]], list[Caption]]:
        if (prompt, max_new) not in done:
            ids = captioner.forward(pixels, prompt=prompt, max_new_tokens=max_new)
            rows = [_unpad(row) for row in ids.tolist()]
            done[prompt, max_new] = rows, captioner.postprocess(ids, max_new_tokens=max_new)
        return done[prompt, max_new]

    return get


def _unpad(row: list[int]) -> list[int]:
    """generate's row up to and including its end-of-text (the rest is padding)."""
    return row[: row.index(EOS) + 1] if EOS in row else row


def _decode(
    captioner: Captioner, pixels: list[torch.Tensor], *, slots: int, prompt: str, max_new: int
) -> tuple[Kosmos2Decoder, list[list[int]]]:
    decoder = Kosmos2Decoder(captioner.model, slots=slots, eos_token_ids=[EOS], pad_token_id=PAD)
    inputs = PromptInputs(**captioner._prompt_inputs(prompt))
    rows = decoder.generate(pixels, prompt=inputs, max_new_tokens=max_new)
    return decoder, rows


def test_the_grounded_tiny_model_stops_at_varied_lengths_and_grounds(reference: Reference) -> None:
    """Otherwise the equality tests below would not test stopping, refills or entities."""
    for preset in ("detailed", "brief"):
        rows, captions = reference(PRESETS[preset], MAX_NEW)
        lengths = [len(row) for row in rows]
        assert all(row[-1] == EOS for row in rows), "every caption ends at end-of-text"
        assert min(lengths) <= 20 and max(lengths) >= 40 and len(set(lengths)) >= 5, sorted(lengths)
        assert sum(1 for c in captions if c.entities) >= N_IMAGES // 2
        assert len({c.text for c in captions}) >= 5


@pytest.mark.parametrize("preset", ["detailed", "brief"])
@pytest.mark.parametrize("slots", [1, 7, 64])
def test_captions_equal_generate(
    captioner: Captioner, pixels: list[torch.Tensor], reference: Reference, slots: int, preset: str
) -> None:
    prompt = PRESETS[preset]
    expected_rows, expected = reference(prompt, MAX_NEW)
    decoder, rows = _decode(captioner, pixels, slots=slots, prompt=prompt, max_new=MAX_NEW)
    assert rows == expected_rows
    got = captioner.postprocess(pad_rows(rows, pad_token_id=PAD), max_new_tokens=MAX_NEW)
    assert [(c.text, c.entities, c.truncated) for c in got] == [
        (c.text, c.entities, c.truncated) for c in expected
    ]
    if 1 < slots < N_IMAGES:
        # Slots were refilled while other rows were still decoding: more prefills than
        # rounds of `slots` images would need, and the slots stayed mostly busy.
        assert decoder.stats.prefills > N_IMAGES // slots
        assert decoder.stats.occupancy > 0.8


def test_rows_cut_at_the_token_limit_equal_generate(
    captioner: Captioner, pixels: list[torch.Tensor], reference: Reference
) -> None:
    """Some rows stop at end-of-text, the rest at max_new_tokens (truncated)."""
    prompt = PRESETS["brief"]
    expected_rows, expected = reference(prompt, 24)
    _, rows = _decode(captioner, pixels, slots=7, prompt=prompt, max_new=24)
    assert rows == expected_rows
    got = captioner.postprocess(pad_rows(rows, pad_token_id=PAD), max_new_tokens=24)
    assert [c.truncated for c in got] == [c.truncated for c in expected]
    assert 0 < sum(c.truncated for c in got) < N_IMAGES


def test_out_of_memory_halves_the_slots_and_loses_no_image(
    captioner: Captioner, pixels: list[torch.Tensor], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mocks a GPU (there is none here to run out of memory): see small_gpu_step."""
    small_gpu_step(monkeypatch, max_rows=4)
    prompt = PRESETS["detailed"]
    decoder, rows = _decode(captioner, pixels[:20], slots=16, prompt=prompt, max_new=MAX_NEW)
    assert decoder.slots == 4
    assert rows == reference(prompt, MAX_NEW)[0][:20]


def test_a_caption_ending_at_its_first_token_frees_its_slot(captioner: Captioner) -> None:
    """max_new_tokens=1: every row ends at prefill; no decode step runs at all."""
    images = [captioner.preprocess(image) for image in tiny_images(5, seed=3)]
    decoder, rows = _decode(captioner, images, slots=2, prompt=PRESETS["brief"], max_new=1)
    expected = captioner.forward(images, prompt=PRESETS["brief"], max_new_tokens=1).tolist()
    assert rows == expected
    assert decoder.stats.steps == 0


def test_the_default_slots_fit_the_full_model_in_6_gb_in_bf16() -> None:
    """Settings' decoder_slots default: full-size Kosmos-2 weights plus its cache under 6 GB.
    The model is built on the meta device (no memory) just to count its parameters."""
    from transformers import Kosmos2ForConditionalGeneration

    from shared.core.settings import Settings
    from workers.captioning.families.kosmos2.kv_cache import kv_cache_bytes
    from workers.tiny.kosmos2 import KOSMOS2_PRESETS, kosmos2_config

    full = KOSMOS2_PRESETS["full"]
    assert full.vocab_size is not None
    with torch.device("meta"):
        model = Kosmos2ForConditionalGeneration(kosmos2_config(preset="full", vocab_size=full.vocab_size))
    weights = sum(p.numel() for p in model.parameters()) * 2
    # The default prompt plus 128 new tokens, rounded up as the decoder rounds: 256 positions.
    cache = kv_cache_bytes(
        layers=full.text_layers,
        slots=Settings().decoder_slots,
        embed_dim=full.text_embed_dim,
        max_len=256,
        dtype=torch.bfloat16,
    )
    assert cache == 1536 * 2**20
    assert weights + cache < 6e9, (weights, cache)
