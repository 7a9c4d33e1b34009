"""Random Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints: their vision towers, their decoders.

Each image keeps its own size: the image processor cuts it into 8 px patches and the model
merges 2 x 2 of them into one image token, so images of different sizes give rows of
different lengths (what left padding is tested against) and ``max_pixels`` is what the
image-token cap sets. The processor is written as its parts (``parts.py``), as the hub
checkpoints are: no torchvision is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import torch
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from workers.tiny.common import SEED
from workers.tiny.llava import CHAT_WORDS
from workers.tiny.parts import ProcessorParts
from workers.tiny.words import chat_template, save_word_model, word_tokenizer

_SPECIALS: Final = (
    "<|endoftext|>",
    "<s>",
    "<|im_end|>",
    "<|im_start|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_PAD, _BOS, _EOS = 0, 1, 2
_PATCH: Final = 8
_MERGE: Final = 2
# One image token per (8 x 2)^2 pixels; a 64 x 48 photo is 12 tokens. The hub's bounds are
# 4 .. 16,384 tokens; here 4 .. 64, so the cap (set lower in tests) has room to act.
_MIN_PIXELS: Final = 4 * (_PATCH * _MERGE) ** 2
_MAX_PIXELS: Final = 64 * (_PATCH * _MERGE) ** 2
# The text decoder: width 64 over 2 heads, so rotary halves of 16, split over the three
# M-RoPE axes (time, height, width) as the hub configs split theirs.
_HIDDEN: Final = 64
_HEADS: Final = 2
_MROPE: Final = [4, 6, 6]
# The vision tower of Qwen2.5-VL and Qwen3-VL (Qwen2-VL names its widths otherwise).
_VISION: Final = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": _HIDDEN,
    "patch_size": _PATCH,
    "spatial_merge_size": _MERGE,
}
# The processor class by family name.
_PROCESSORS: Final = {
    "qwen2-vl": "Qwen2VLProcessor",
    "qwen2.5-vl": "Qwen2_5_VLProcessor",
    "qwen3-vl": "Qwen3VLProcessor",
}


def qwen_vl_processor(family: str) -> ProcessorParts:
    tokenizer = word_tokenizer(
        _SPECIALS,
        bos="<s>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra_text=CHAT_WORDS,
        extra_special={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat=chat_template("<|vision_start|><|image_pad|><|vision_end|>"),
    )
    images = Qwen2VLImageProcessorPil(
        patch_size=_PATCH,
        merge_size=_MERGE,
        temporal_patch_size=2,
        size={"shortest_edge": _MIN_PIXELS, "longest_edge": _MAX_PIXELS},
    )
    return ProcessorParts(_PROCESSORS[family], images, tokenizer)


def _text_config(tokenizer: PreTrainedTokenizerFast, **extra: Any) -> dict[str, Any]:
    """The decoder: 2 layers of width 64, an untied head and a wide random init (see
    DESIGN.md "No model hub here"), so images steer greedy decoding apart."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": _HIDDEN,
        "intermediate_size": 2 * _HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": _HEADS,
        "num_key_value_heads": _HEADS,
        "initializer_range": 0.1,
        "tie_word_embeddings": False,
        "pad_token_id": _PAD,
        "bos_token_id": _BOS,
        "eos_token_id": _EOS,
        **extra,
    }


def _tokens(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
        "tie_word_embeddings": False,
    }


def _qwen2_vl(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    config = Qwen2VLConfig(
        text_config=_text_config(tokenizer, rope_parameters={"rope_type": "mrope", "mrope_section": _MROPE}),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": _HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": _PATCH,
            "spatial_merge_size": _MERGE,
        },
        **_tokens(tokenizer),
    )
    return Qwen2VLForConditionalGeneration(config)


def _qwen2_5_vl(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    config = Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, rope_parameters={"rope_type": "mrope", "mrope_section": _MROPE}),
        vision_config={
            **_VISION,
            # Windows of 2 x 2 merged tokens in the first block, full attention in the last.
            "window_size": 2 * _PATCH * _MERGE,
            "fullatt_block_indexes": [1],
        },
        **_tokens(tokenizer),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _qwen3_vl(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    config = Qwen3VLConfig(
        text_config=_text_config(
            tokenizer,
            head_dim=_HIDDEN // _HEADS,
            rope_parameters={"rope_type": "default", "mrope_section": _MROPE, "mrope_interleaved": True},
        ),
        vision_config={
            **_VISION,
            # A 4 x 4 grid of learned positions, interpolated to each image's patches.
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        **_tokens(tokenizer),
    )
    return Qwen3VLForConditionalGeneration(config)


_MODELS: Final[dict[str, Callable[[PreTrainedTokenizerFast], torch.nn.Module]]] = {
    "qwen2-vl": _qwen2_vl,
    "qwen2.5-vl": _qwen2_5_vl,
    "qwen3-vl": _qwen3_vl,
}


def build_qwen_vl(out_dir: Path, *, family: str) -> Path:
    processor = qwen_vl_processor(family)
    tokenizer = processor.tokenizer
    torch.manual_seed(SEED)
    model = _MODELS[family](tokenizer).eval()
    return save_word_model(model, processor, Path(out_dir), pad=_PAD, bos=_BOS, eos=_EOS)


def build_qwen2_vl(out_dir: Path) -> Path:
    return build_qwen_vl(out_dir, family="qwen2-vl")


def build_qwen2_5_vl(out_dir: Path) -> Path:
    return build_qwen_vl(out_dir, family="qwen2.5-vl")


def build_qwen3_vl(out_dir: Path) -> Path:
    return build_qwen_vl(out_dir, family="qwen3-vl")
