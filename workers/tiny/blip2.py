"""A random BLIP-2 checkpoint: ViT vision tower, Q-Former, OPT decoder, a word-level tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessorPil,
)

from workers.tiny.common import SEED
from workers.tiny.words import save_word_model, word_tokenizer

_SPECIALS: Final = ("<s>", "<pad>", "</s>", "<image>")
_BOS, _PAD, _EOS = 0, 1, 2
_IMAGE_SIZE: Final = 32
_QUERY_TOKENS: Final = 4


def blip2_processor() -> Blip2Processor:
    tokenizer = word_tokenizer(
        _SPECIALS,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        extra_text=("question: describe this image in detail. answer:",),
    )  # no image_token attribute: Blip2Processor then uses its own "<image>" (already in the vocabulary)
    images = BlipImageProcessorPil(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE})
    return Blip2Processor(image_processor=images, tokenizer=tokenizer, num_query_tokens=_QUERY_TOKENS)


def build_blip2(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    processor = blip2_processor()
    tokenizer = processor.tokenizer
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": _IMAGE_SIZE,
            "patch_size": 8,
        },
        qformer_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "encoder_hidden_size": 32,
            "vocab_size": 64,
        },
        text_config={
            "model_type": "opt",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "word_embed_proj_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "ffn_dim": 128,
            "init_std": 0.1,
            "tie_word_embeddings": False,
            "bos_token_id": _BOS,
            "pad_token_id": _PAD,
            "eos_token_id": _EOS,
        },
        num_query_tokens=_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(SEED)
    model = Blip2ForConditionalGeneration(config).eval()
    return save_word_model(model, processor, out_dir, pad=_PAD, bos=_BOS, eos=_EOS)
