"""Random Idefics3 and SmolVLM checkpoints: SigLIP-style vision tower, Llama decoder, tiles.

The processor tiles a photo (longest edge up to 64 px, tiles of 32 px) and adds a global
view, so images of different sizes give rows of different lengths: what left padding and
the image-token cap are tested against. SmolVLM is Idefics3's architecture with a processor
that also takes video; its processor is written as its parts (``parts.py``), as on the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PreTrainedTokenizerFast,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
)

from workers.tiny.common import SEED
from workers.tiny.parts import ProcessorParts
from workers.tiny.words import save_word_model, tiny_llama_config, word_tokenizer

_GRID: Final = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
_SPECIALS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *_GRID,
)
_PAD, _BOS, _EOS = 0, 1, 3
_TILE: Final = 32
_PATCH: Final = 8
_SCALE: Final = 2
# (32 / 8)^2 patches, merged 2 x 2 by the pixel shuffle.
IMAGE_SEQ_LEN: Final = (_TILE // _PATCH) ** 2 // _SCALE**2
# Idefics3's own template form: "User:<image> text<end_of_utterance>\nAssistant:".
_TEMPLATE: Final = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(
        _SPECIALS,
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
        extra_text=("user assistant describe this image in one short sentence.",),
        extra_special={"image_token": "<image>"},
        chat=_TEMPLATE,
    )


# Longest edge 64 px, cut into tiles of 32 px.
_TILING: Final[dict[str, Any]] = {
    "size": {"longest_edge": 2 * _TILE},
    "max_image_size": {"longest_edge": _TILE},
    "do_image_splitting": True,
}


def idefics3_processor() -> Idefics3Processor:
    tokenizer = _tokenizer()
    images = Idefics3ImageProcessorPil(**_TILING)
    return Idefics3Processor(
        image_processor=images, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN, chat_template=_TEMPLATE
    )


def smolvlm_processor() -> ProcessorParts:
    images = SmolVLMImageProcessorPil(**_TILING)
    return ProcessorParts("SmolVLMProcessor", images, _tokenizer(), {"image_seq_len": IMAGE_SEQ_LEN})


def _config(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return dict(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": _TILE,
            "patch_size": _PATCH,
        },
        text_config=tiny_llama_config(tokenizer, pad=_PAD, bos=_BOS, eos=_EOS),
        scale_factor=_SCALE,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )


def build_idefics3(out_dir: Path) -> Path:
    processor = idefics3_processor()
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(Idefics3Config(**_config(processor.tokenizer))).eval()
    return save_word_model(model, processor, Path(out_dir), pad=_PAD, bos=_BOS, eos=_EOS)


def build_smolvlm(out_dir: Path) -> Path:
    processor = smolvlm_processor()
    torch.manual_seed(SEED)
    model = SmolVLMForConditionalGeneration(SmolVLMConfig(**_config(processor.tokenizer))).eval()
    return save_word_model(model, processor, Path(out_dir), pad=_PAD, bos=_BOS, eos=_EOS)
