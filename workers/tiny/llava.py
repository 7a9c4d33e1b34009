"""A random LLaVA checkpoint: CLIP vision tower, Llama decoder, a ChatML chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from workers.tiny.common import SEED, image_processor
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


def llava_processor() -> LlavaProcessor:
    tokenizer = word_tokenizer(
        _SPECIALS,
        bos="<s>",
        eos="<|im_end|>",
        pad="<pad>",
        extra_text=CHAT_WORDS,
        extra_special={"image_token": "<image>"},
        chat=chat_template("<image>"),
    )
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
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": _IMAGE_SIZE,
            "patch_size": _PATCH,
        },
        text_config=tiny_llama_config(tokenizer, pad=_PAD, bos=_BOS, eos=_EOS),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    return save_word_model(model, processor, out_dir, pad=_PAD, bos=_BOS, eos=_EOS)
