"""Random SigLIP and SigLIP 2 checkpoints with the real classes and a word-level tokenizer.

SigLIP's processor resizes to a fixed square; SigLIP 2's (NaFlex) keeps the aspect ratio and
pads to a fixed number of patches. The logit scale and bias are set to the values the real
checkpoints learn (exp(scale) about 112, bias about -16.5), so scores fall where real ones do
for unrelated pairs: near 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

import torch
from transformers import (
    Siglip2Config,
    Siglip2ImageProcessorPil,
    Siglip2Model,
    Siglip2Processor,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
)
from transformers.tokenization_utils_fast import PreTrainedTokenizerFast

from workers.tiny.common import SEED
from workers.tiny.words import word_tokenizer

_SPECIALS: Final = ("<pad>", "</s>")
_PAD, _EOS = 0, 1
_WINDOW: Final = 64
_IMAGE_SIZE: Final = 32
_PATCH: Final = 8
_LOGIT_SCALE: Final = math.log(112.0)
_LOGIT_BIAS: Final = -16.5


def _tokenizer(*, attention_mask: bool) -> PreTrainedTokenizerFast:
    """SigLIP's tokenizer gives input ids only, SigLIP 2's (Gemma's) an attention mask too."""
    tokenizer = word_tokenizer(_SPECIALS, eos="</s>", pad="<pad>")
    tokenizer.model_max_length = _WINDOW
    tokenizer.model_input_names = ["input_ids", "attention_mask"] if attention_mask else ["input_ids"]
    return tokenizer


def _text_config(vocab_size: int) -> dict[str, object]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": _WINDOW,
        "pad_token_id": _PAD,
        "bos_token_id": _EOS,
        "eos_token_id": _EOS,
        "projection_size": 32,
    }


def _vision_config(**extra: object) -> dict[str, object]:
    return {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "patch_size": _PATCH,
        **extra,
    }


def _set_logits(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.fill_(_LOGIT_SCALE)  # type: ignore[operator]
        model.logit_bias.fill_(_LOGIT_BIAS)  # type: ignore[operator]


def build_siglip(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    tokenizer = _tokenizer(attention_mask=False)
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}),
        tokenizer=tokenizer,
    )
    config = SiglipConfig(
        text_config=_text_config(len(tokenizer)), vision_config=_vision_config(image_size=_IMAGE_SIZE)
    )
    torch.manual_seed(SEED)
    model = SiglipModel(config).eval()
    _set_logits(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


def build_siglip2(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    tokenizer = _tokenizer(attention_mask=True)
    patches = (_IMAGE_SIZE // _PATCH) ** 2
    processor = Siglip2Processor(
        image_processor=Siglip2ImageProcessorPil(patch_size=_PATCH, max_num_patches=patches),
        tokenizer=tokenizer,
    )
    config = Siglip2Config(
        text_config=_text_config(len(tokenizer)), vision_config=_vision_config(num_patches=patches)
    )
    torch.manual_seed(SEED)
    model = Siglip2Model(config).eval()
    _set_logits(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
