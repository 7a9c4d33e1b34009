"""A random Florence-2 checkpoint: DaViT vision tower, BART encoder-decoder, its processor.

The processor gets the post-processing config the hub checkpoints ship (caption tasks are
"pure_text"), and an image size whose DaViT output (2 x 2 tokens plus the pooled one)
matches the processor's ``image_seq_length``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import torch
from transformers import (
    CLIPImageProcessorPil,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
)

from workers.tiny.common import SEED
from workers.tiny.words import save_word_model, word_tokenizer

_SPECIALS: Final = ("<s>", "<pad>", "</s>", "<image>")
_BOS, _PAD, _EOS = 0, 1, 2
# DaViT's four stages stride 4, 2, 2, 2: 64 px -> 2 x 2 tokens, plus one pooled token.
_IMAGE_SIZE: Final = 64
_IMAGE_TOKENS: Final = 5
# The instructions the processor turns task tokens into, so they tokenize to words.
_TASK_TEXT: Final = (
    "what does the image describe? describe in detail what is shown in the image. "
    "describe with a paragraph what is shown in the image. locate the objects with category name.",
)


def florence2_processor() -> Florence2Processor:
    tokenizer = word_tokenizer(
        _SPECIALS,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        extra_text=_TASK_TEXT,
        extra_special={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(
        size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        do_center_crop=False,
        image_seq_length=_IMAGE_TOKENS,
    )
    return Florence2Processor(
        image_processor=images,
        tokenizer=tokenizer,
        post_processor_config={"pure_text": {}, "description_with_bboxes": {}},
    )


def build_florence2(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    processor = florence2_processor()
    tokenizer = processor.tokenizer
    config = Florence2Config(
        vision_config={
            "depths": [1, 1, 1, 1],
            "embed_dim": [16, 32, 48, 64],
            "num_heads": [1, 2, 3, 4],
            "num_groups": [1, 2, 3, 4],
            "window_size": 2,
            "projection_dim": 64,
            "max_position_embeddings": 8,
            "max_temporal_embeddings": 4,
            "drop_path_rate": 0.0,
        },
        text_config={
            "model_type": "bart",
            "vocab_size": len(tokenizer),
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "max_position_embeddings": 128,
            "init_std": 0.1,
            "tie_word_embeddings": False,
            "bos_token_id": _BOS,
            "pad_token_id": _PAD,
            "eos_token_id": _EOS,
            "decoder_start_token_id": _EOS,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Florence2ForConditionalGeneration(config).eval()
    return save_word_model(
        model, processor, out_dir, pad=_PAD, bos=_BOS, eos=_EOS, decoder_start_token_id=_EOS
    )
