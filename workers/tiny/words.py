"""A word-level tokenizer over the training sentences, for the tiny VLMs of every other family.

Each family's processor only needs a tokenizer that knows its special tokens and, for chat
models, a chat template: a word-level vocabulary (one id per corpus word) gives that, and
a random model's greedy output decodes to whole words, so captions are readable and differ
from image to image. It is a real ``PreTrainedTokenizerFast``, saved and loaded by
``from_pretrained``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast

from workers.tiny.common import SENTENCES

UNK: Final = "<unk>"

# A chat template in the common ChatML form: an image item becomes the family's image
# placeholder (the processor then expands it to the model's image tokens).
CHATML_TEMPLATE: Final = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}IMAGE_TOKEN"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(image_token: str) -> str:
    return CHATML_TEMPLATE.replace("IMAGE_TOKEN", image_token)


def corpus_words(extra: Sequence[str] = ()) -> list[str]:
    """Every distinct lowercase word and punctuation mark of the sentences, in order."""
    text = " ".join((*SENTENCES, *extra)).lower()
    return list(dict.fromkeys(re.findall(r"[a-z]+|[^\sa-z]", text)))


def word_tokenizer(
    specials: Sequence[str],
    *,
    bos: str | None = None,
    eos: str,
    pad: str,
    extra_text: Sequence[str] = (),
    extra_special: dict[str, str] | None = None,
    chat: str | None = None,
) -> PreTrainedTokenizerFast:
    """Special tokens first (ids 0..n-1, in the given order), then the corpus words, then unk.

    ``extra_special`` names tokens the processor looks up as attributes (``image_token``).
    Text is lowercased: the corpus is, and a prompt in any case should still find its words.
    """
    words = [w for w in corpus_words(extra_text) if w not in specials]
    vocab = {token: i for i, token in enumerate([*specials, *words, UNK])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra_special or {},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    if chat is not None:
        tokenizer.chat_template = chat
    return tokenizer


def word_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of whole corpus words: the only ones a random model is allowed to write."""
    return sorted(i for token, i in tokenizer.get_vocab().items() if token.isalpha() and token.islower())


def mute_all_but_words(head: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    """Zero the output head's rows of every non-word token (see DESIGN.md "No model hub here").

    A random model then never writes a special token, an image placeholder or end-of-text:
    every caption runs to max_new_tokens and decodes to words.
    """
    keep = set(word_ids(tokenizer))
    weight: torch.Tensor = getattr(head, "weight")  # noqa: B009  (a Module attribute, typed here)
    muted = [i for i in range(weight.shape[0]) if i not in keep]
    with torch.no_grad():
        weight[muted] = 0.0
        bias: torch.Tensor | None = getattr(head, "bias", None)
        if bias is not None:
            bias[muted] = 0.0


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, *, pad: int, bos: int, eos: int) -> dict[str, Any]:
    """The text half of a tiny chat model: a 2-layer Llama of width 64.

    See DESIGN.md "No model hub here": an untied head and a wide random init, so that
    images steer greedy decoding apart.
    """
    return {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "tie_word_embeddings": False,
        "initializer_range": 0.1,
        "pad_token_id": pad,
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


def save_word_model(
    model: Any, processor: Any, out_dir: Path, *, pad: int, bos: int, eos: int, **generation: Any
) -> Path:
    """Speak only corpus words, decode greedily, and save model and processor to out_dir.

    generation: further generation-config fields (an encoder-decoder's decoder_start_token_id).
    """
    mute_all_but_words(model.get_output_embeddings(), processor.tokenizer)
    model.generation_config = GenerationConfig(
        do_sample=False, num_beams=1, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **generation
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
