"""The offline model factory builds checkpoints that load and run like the hub ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPModel,
    CLIPProcessor,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
)

from tests.tolerances import float32_spread
from workers.tiny.clip import build_clip, clip_processor
from workers.tiny.images import tiny_images
from workers.tiny.kosmos2 import build_kosmos2, kosmos2_config, kosmos2_processor

PROMPT = (
    "<grounding>Give a detailed description of this image, including any subject matter, "
    "style of art if any, and the context:"
)
N_IMAGES = 6
NEW_TOKENS = 20

Kosmos2 = tuple[Kosmos2Processor, Kosmos2ForConditionalGeneration]


@pytest.fixture(scope="module")
def kosmos2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_kosmos2(tmp_path_factory.mktemp("kosmos2"), preset="tiny")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_clip(tmp_path_factory.mktemp("clip"), preset="tiny")


@pytest.fixture(scope="module")
def kosmos2(kosmos2_dir: Path) -> Kosmos2:
    processor = AutoProcessor.from_pretrained(kosmos2_dir)
    model = AutoModelForImageTextToText.from_pretrained(kosmos2_dir, attn_implementation="sdpa").eval()
    # The Auto classes map Kosmos-2 directly; production needs no fallback.
    assert isinstance(processor, Kosmos2Processor)
    assert isinstance(model, Kosmos2ForConditionalGeneration)
    return processor, model


def _generate(
    processor: Kosmos2Processor, model: Kosmos2ForConditionalGeneration, images: list[Image.Image]
) -> torch.Tensor:
    """The production call sequence; returns only the newly generated ids."""
    inputs = processor(text=[PROMPT] * len(images), images=images, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(
            pixel_values=inputs["pixel_values"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            image_embeds=None,
            image_embeds_position_mask=inputs["image_embeds_position_mask"],
            max_new_tokens=NEW_TOKENS,
        )
    # generate returns prompt + new tokens; every row shares the prompt length.
    prompt_len = inputs["input_ids"].shape[1]
    assert ids.shape == (len(images), prompt_len + NEW_TOKENS)
    assert torch.equal(ids[:, :prompt_len], inputs["input_ids"])
    return ids[:, prompt_len:]


def test_tiny_images_are_deterministic_and_distinct() -> None:
    first = tiny_images(5, seed=3)
    again = tiny_images(5, seed=3)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    assert len({im.tobytes() for im in first}) == 5
    assert all(im.mode == "RGB" and im.size == (64, 48) for im in first)
    assert tiny_images(1, seed=4)[0].tobytes() != first[0].tobytes()


def test_kosmos2_vocab_matches_processor_tokenizer(kosmos2: Kosmos2) -> None:
    processor, model = kosmos2
    text_config = model.config.get_text_config()
    assert text_config.vocab_size == len(processor.tokenizer)
    assert model.config.tie_word_embeddings is False
    assert text_config.tie_word_embeddings is False
    head_layer, embed_layer = model.get_output_embeddings(), model.get_input_embeddings()
    assert isinstance(head_layer, torch.nn.Linear)
    assert isinstance(embed_layer, torch.nn.Embedding)
    head = head_layer.weight
    assert head.data_ptr() != embed_layer.weight.data_ptr()
    # Tag, patch-index and special tokens can never be generated.
    muted = processor.tokenizer.convert_tokens_to_ids(
        [
            "<grounding>",
            "<phrase>",
            "</phrase>",
            "<object>",
            "</object>",
            "</image>",
            "<patch_index_0511>",
            "</s>",
        ]
    )
    assert torch.count_nonzero(head[muted]) == 0
    assert model.generation_config.do_sample is False


def test_kosmos2_build_is_deterministic(kosmos2_dir: Path, tmp_path: Path) -> None:
    again = build_kosmos2(tmp_path / "again", preset="tiny")
    assert (again / "model.safetensors").read_bytes() == (kosmos2_dir / "model.safetensors").read_bytes()


def test_kosmos2_captions_are_words_and_differ(kosmos2: Kosmos2) -> None:
    processor, model = kosmos2
    images = tiny_images(N_IMAGES)
    new_ids = _generate(processor, model, images)

    captions: list[str] = []
    for text in processor.batch_decode(new_ids, skip_special_tokens=True):
        caption, entities = processor.post_process_generation(text)
        assert caption.strip()
        assert isinstance(entities, list)
        captions.append(caption)
    assert len(set(captions)) >= 2, captions

    # Decoding prompt + new ids also works: post-processing cuts at </image>,
    # leaving the prompt text (without <grounding>) to strip off.
    inputs = processor(text=[PROMPT], images=images[:1], return_tensors="pt")
    with torch.inference_mode():
        full = model.generate(
            pixel_values=inputs["pixel_values"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            image_embeds=None,
            image_embeds_position_mask=inputs["image_embeds_position_mask"],
            max_new_tokens=NEW_TOKENS,
        )
    echoed, _ = processor.post_process_generation(processor.batch_decode(full, skip_special_tokens=True)[0])
    echo = PROMPT.removeprefix("<grounding>")
    assert echoed.startswith(echo)
    assert echoed.removeprefix(echo).strip() == captions[0]


def test_kosmos2_batch_equals_one_at_a_time(kosmos2: Kosmos2) -> None:
    processor, model = kosmos2
    images = tiny_images(N_IMAGES, seed=1)
    batched = _generate(processor, model, images)
    for i, image in enumerate(images):
        single = _generate(processor, model, [image])
        assert torch.equal(batched[i], single[0]), f"image {i} differs between batch and single generation"


def test_kosmos2_post_process_entities_shape(kosmos2: Kosmos2) -> None:
    processor, _ = kosmos2
    text = (
        "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>"
        "<patch_index_0863></object> warming himself."
    )
    caption, entities = processor.post_process_generation(text)
    assert caption == "An image of a snowman warming himself."
    assert entities == [("a snowman", (12, 21), [(0.390625, 0.046875, 0.984375, 0.828125)])]


def test_kosmos2_full_preset_has_real_sizes() -> None:
    processor = kosmos2_processor(preset="full")
    assert len(processor.tokenizer) == 65037
    config = kosmos2_config(preset="full", vocab_size=len(processor.tokenizer))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    # microsoft/kosmos-2-patch14-224 has 1.66 B parameters with a tied head;
    # the untied head adds its own 65037 x 2048.
    assert params - head == 1_664_485_376
    assert head == 65037 * 2048


def test_clip_features_and_truncation(clip_dir: Path) -> None:
    processor = CLIPProcessor.from_pretrained(clip_dir)
    assert isinstance(AutoProcessor.from_pretrained(clip_dir), CLIPProcessor)
    model = CLIPModel.from_pretrained(clip_dir, attn_implementation="sdpa").eval()
    tokenizer = processor.tokenizer
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token == "<|startoftext|>"
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.tokenize("a dog")[-1] == "dog</w>"

    long_caption = " ".join(["a small dog runs across the green field"] * 20)
    texts = ["a red circle", long_caption, "two cats sleeping on a wooden table"]
    images = tiny_images(len(texts))
    inputs = processor(text=texts, images=images, padding=True, truncation=True, return_tensors="pt")
    assert inputs["input_ids"].shape == (3, 77)
    # Truncation keeps room for EOS, where CLIP pools the text.
    assert inputs["input_ids"][1, -1].item() == tokenizer.eos_token_id
    assert model.config.text_config.eos_token_id == tokenizer.eos_token_id

    with torch.inference_mode():
        image_out = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_out = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        out = model(**inputs)
    projection_dim = model.config.projection_dim
    image_emb, text_emb = image_out.pooler_output, text_out.pooler_output
    assert image_emb.shape == (3, projection_dim)
    assert text_emb.shape == (3, projection_dim)
    cosine = (
        torch.nn.functional.normalize(image_emb, dim=-1) @ torch.nn.functional.normalize(text_emb, dim=-1).T
    )
    # Logit scale is 100 as in trained CLIP, so the score is 100 x cosine. The same towers on
    # the same batch give the same embeddings; what differs is the model's own cosine (the
    # norms and the dot, 3 x projection_dim), its scale exp(float32 ln 100) (ln 100 x u + eps,
    # under 6 eps) and the product (one rounding), all at the size of 100.
    spread = float32_spread(3 * projection_dim + 6 + 1, scale=100.0)
    torch.testing.assert_close(out.logits_per_image, 100 * cosine, rtol=0, atol=spread)


def test_clip_full_preset_has_real_vocab() -> None:
    processor = clip_processor(preset="full")
    assert len(processor.tokenizer) == 49408
    assert processor.tokenizer.eos_token_id == 49407
    assert processor.tokenizer.bos_token_id == 49406
