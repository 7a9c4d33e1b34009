"""Teach a random tiny Kosmos-2 to stop and to ground: the "grounded" caption mode.

A random model never emits end-of-text (it is muted) and never a well-formed grounding tag,
so neither the stopping rule of a decoder nor entity extraction would be tested. This module
rewrites a few weights, deterministically, so that greedy decoding follows Kosmos-2's
grounding grammar

    ... word <phrase> noun </phrase> <object> <patch_index_a> <patch_index_b> </object> word ...

and emits end-of-text after lengths that vary with the image (a few tokens to the limit).

How: the last `_CONTROL_DIMS` dimensions of the residual stream are reserved. No layer
writes into them (their rows of every out_proj and fc2 are zeroed), so at the output they
still hold the input token's embedding plus its (nearly constant, lowest-frequency)
sinusoidal position. Each grammar state gets one of these dimensions: a token that opens a
state has a large value there, every other token cancels the position's share. The output
head reads these dimensions: a state forces its successors with a large weight, and
tokens that may only appear inside the grammar carry a negative weight on an always-on
dimension, so they are muted elsewhere. The other dimensions (and so the image, through
attention) still choose which noun, which patch and when to stop.

Invariant: only weights change, the architecture is the stock Kosmos2ForConditionalGeneration,
so transformers' own `generate` is the reference for any decoder tested on it.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from transformers import Kosmos2Processor

from workers.tiny.common import SENTENCES

_CONTROL_DIMS: Final = 10
# Nouns allowed inside <phrase>...</phrase>, all whole words of the tokenizer's corpus.
_NOUNS: Final = (
    "dog", "cat", "cats", "horse", "horses", "bird", "car", "boat", "train", "city", "castle",
    "tree", "book", "chair", "robot", "dragon", "flower", "bridge", "man", "woman",
)  # fmt: skip
# Pre-norm values of an active state dimension and of the always-on one, in units of the
# residual stream's own root-mean-square at the final layer norm: a deeper decoder's stream is
# larger (about 2.6x at 16 layers than at 2), and the states must stand out of it alike.
_HOT: Final = 7.5
_ALWAYS: Final = 1.9
_FORCE: Final = 6.0  # output-head weight of a state on its successors
_MUTE: Final = 6.0  # output-head weight, negative, of grammar-only tokens on the always-on dimension
# The share of words after which a phrase opens (trigger_share), and how strongly end-of-text
# competes with the next word after each </object> (eos_force), are per preset
# (Kosmos2Preset.grammar): a random decoder's greedy loops differ with its depth, so the
# values that make captions end after a few to a hundred-odd tokens, depending on the image,
# differ too. The scale of end-of-text's random row: how much the image sways it.
_EOS_SCALE: Final = 12.0
# A random connector's image embeddings are faint next to the prompt's, so every image gets
# about the same caption; scaling its output lets the image steer the words and the lengths.
_IMAGE_GAIN: Final = 16.0


def teach_grammar(
    model: Any,
    processor: Kosmos2Processor,
    *,
    seed: int,
    trigger_share: float,
    eos_force: float,
) -> None:
    """Rewrite `model`'s text weights in place (see the module docstring)."""
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids
    text = model.text_model.model
    head = model.get_output_embeddings().weight
    embed = text.embed_tokens.weight
    width = embed.shape[1]
    if width <= 2 * _CONTROL_DIMS:
        raise ValueError(f"the grounded mode needs a text width above {2 * _CONTROL_DIMS}, not {width}")
    (phrase_dim, noun_dim, end_phrase_dim, object_dim, first_dim, second_dim, end_object_dim, trigger_dim) = (
        range(width - _CONTROL_DIMS, width - 2)
    )
    always_dim = width - 1
    control = slice(width - _CONTROL_DIMS, width)
    scale = float(text.embed_scale)

    nouns = [token_id for token_id in ids([f"▁{n}" for n in _NOUNS]) if token_id != tokenizer.unk_token_id]
    patches = [ids(f"<patch_index_{i:04d}>") for i in range(1024)]
    # Upper-left corners from the top-left quarter, lower-right ones from the bottom-right, so
    # every box is a proper box.
    first_patches = [patches[row * 32 + col] for row in range(16) for col in range(16)]
    second_patches = [patches[row * 32 + col] for row in range(16, 32) for col in range(16, 32)]
    phrase, end_phrase = ids("<phrase>"), ids("</phrase>")
    obj, end_obj = ids("<object>"), ids("</object>")
    eos = int(model.config.text_config.eos_token_id)

    generator = torch.Generator().manual_seed(seed)
    rms = _residual_rms(model, processor, free=width - _CONTROL_DIMS)
    words = sorted(
        token_id
        for piece, token_id in tokenizer.get_vocab().items()
        if piece.startswith("▁") and piece[1:].isalnum() and token_id not in set(nouns)
    )
    picks = torch.rand(len(words), generator=generator) < trigger_share
    triggers = [word for word, picked in zip(words, picks.tolist(), strict=True) if picked]
    word_std = float(head[nouns].detach().std())
    with torch.no_grad():
        connector = model.image_to_text_projection.x_attn.out_proj
        connector.weight *= _IMAGE_GAIN
        connector.bias *= _IMAGE_GAIN
        for layer in text.layers:
            for linear in (layer.self_attn.out_proj, layer.ffn.fc2):
                linear.weight[control] = 0.0
                linear.bias[control] = 0.0
        # Cancel the position's share of the state dimensions (their sinusoids are the
        # slowest, nearly constant over a caption), so an inactive state reads about zero.
        positions = text.embed_positions.weights[2:400, control].mean(dim=0)
        embed[:, control] = -positions / scale
        embed[:, always_dim] = (_ALWAYS * rms - positions[-1]) / scale
        for dim, members in (
            (phrase_dim, [phrase]),
            (noun_dim, nouns),
            (end_phrase_dim, [end_phrase]),
            (object_dim, [obj]),
            (first_dim, first_patches),
            (second_dim, second_patches),
            (end_object_dim, [end_obj]),
            (trigger_dim, triggers),
        ):
            embed[members, dim] += _HOT * rms / scale

        head[:, control] = 0.0
        grammar_only = [*nouns, *patches, phrase, end_phrase, obj, end_obj, eos]
        head[grammar_only, always_dim] = -_MUTE
        # Patch tokens were muted (zero rows); random rows let the image pick the box.
        random_rows = torch.randn((len(patches), width), generator=generator) * word_std
        random_rows[:, control] = 0.0
        head[patches] = random_rows.to(head)
        head[patches, always_dim] = -_MUTE
        for dim, successors in (
            (phrase_dim, nouns),
            (noun_dim, [end_phrase]),
            (end_phrase_dim, [obj]),
            (object_dim, first_patches),
            (first_dim, second_patches),
            (second_dim, [end_obj]),
            (trigger_dim, [phrase]),
        ):
            head[successors, dim] += _FORCE
        # End-of-text only competes right after </object>, where the image decides between it
        # and the next word.
        row = torch.randn(width, generator=generator) * word_std * _EOS_SCALE
        row[control] = 0.0
        head[eos] = row.to(head)
        head[eos, always_dim] = -_MUTE
        head[eos, end_object_dim] = eos_force


def _residual_rms(model: Any, processor: Kosmos2Processor, *, free: int) -> float:
    """Root-mean-square of the free dimensions entering the final layer norm, on the corpus."""
    text = model.text_model.model
    seen: list[torch.Tensor] = []
    hook = text.layer_norm.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    try:
        encoded = processor.tokenizer(list(SENTENCES[:8]), return_tensors="pt", padding=True)
        with torch.no_grad():
            text(input_ids=encoded["input_ids"])
    finally:
        hook.remove()
    return float(seen[0][..., :free].pow(2).mean().sqrt())
