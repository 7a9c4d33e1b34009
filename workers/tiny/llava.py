"""A random LLaVA checkpoint: CLIP vision tower, Llama decoder, a ChatML chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import torch
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from workers.tiny.common import SEED, image_processor
from workers.tiny.words import chat_template, mute_all_but_words, word_tokenizer

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
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            # See DESIGN.md "No model hub here": an untied head, wide random init.
            "tie_word_embeddings": False,
            "initializer_range": 0.1,
            "pad_token_id": _PAD,
            "bos_token_id": _BOS,
            "eos_token_id": _EOS,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    mute_all_but_words(model.get_output_embeddings(), tokenizer)
    model.generation_config = GenerationConfig(
        do_sample=False, num_beams=1, bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_PAD
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
