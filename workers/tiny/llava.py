"""Random LLaVA and LLaVA-OneVision checkpoints: a vision tower, a Llama decoder, ChatML.

LLaVA resizes every photo to 32 px. LLaVA-OneVision (SigLIP tower) tiles a photo into
32 px crops on the best of its grid's resolutions ("anyres") plus a base view, so photos
of different shapes give rows of different lengths; its processor is written as its parts
(``parts.py``), as on the hub, since it also takes video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import torch
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from workers.tiny.common import SEED, image_processor
from workers.tiny.parts import ProcessorParts
from workers.tiny.words import (
    chat_template,
    save_word_model,
    tiny_llama_config,
    word_tokenizer,
)

_SPECIALS: Final = ("<pad>", "<s>", "<|im_end|>", "<|im_start|>", "<image>")
_PAD, _BOS, _EOS = 0, 1, 2
_IMAGE_SIZE: Final = 32
_PATCH: Final = 8
CHAT_WORDS: Final = ("user assistant system describe this image in one short sentence.",)


def _tokenizer(video: str | None = None) -> PreTrainedTokenizerFast:
    """video: OneVision's video token, which its config names (its processor would expand it)."""
    return word_tokenizer(
        (*_SPECIALS, video) if video else _SPECIALS,
        bos="<s>",
        eos="<|im_end|>",
        pad="<pad>",
        extra_text=CHAT_WORDS,
        extra_special={"image_token": "<image>", **({"video_token": video} if video else {})},
        chat=chat_template("<image>"),
    )


def _vision_tower(model_type: str) -> dict[str, Any]:
    return {
        "model_type": model_type,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": _IMAGE_SIZE,
        "patch_size": _PATCH,
    }


def llava_processor() -> LlavaProcessor:
    tokenizer = _tokenizer()
    # The CLS token is dropped ("default" strategy): one token per patch.
    return LlavaProcessor(
        image_processor=image_processor(_IMAGE_SIZE),
        tokenizer=tokenizer,
        patch_size=_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )


def build_llava(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    processor = llava_processor()
    tokenizer = processor.tokenizer
    config = LlavaConfig(
        vision_config=_vision_tower("clip_vision_model"),
        text_config=tiny_llama_config(tokenizer, pad=_PAD, bos=_BOS, eos=_EOS),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    return save_word_model(model, processor, out_dir, pad=_PAD, bos=_BOS, eos=_EOS)


# OneVision: 32 px crops of 4 x 4 patches, each patch one token (SigLIP has no CLS token).
_ONEVISION_TOKENS: Final = (_IMAGE_SIZE // _PATCH) ** 2
_GRID: Final = [[32, 32], [32, 64], [64, 32], [64, 64]]


def llava_onevision_processor() -> ProcessorParts:
    images = LlavaOnevisionImageProcessorPil(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}, image_grid_pinpoints=_GRID
    )
    settings = {"num_image_tokens": _ONEVISION_TOKENS, "vision_feature_select_strategy": "full"}
    return ProcessorParts("LlavaOnevisionProcessor", images, _tokenizer("<video>"), settings)


def build_llava_onevision(out_dir: Path) -> Path:
    processor = llava_onevision_processor()
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    config = LlavaOnevisionConfig(
        vision_config=_vision_tower("siglip_vision_model"),
        text_config=tiny_llama_config(tokenizer, pad=_PAD, bos=_BOS, eos=_EOS),
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=_GRID,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    return save_word_model(model, processor, Path(out_dir), pad=_PAD, bos=_BOS, eos=_EOS)
