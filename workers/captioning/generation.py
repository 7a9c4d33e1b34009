"""transformers' generate() arguments for kcap's decoding options, in one place for every family."""

from __future__ import annotations

from typing import Any


def decoding_kwargs(
    *,
    max_new_tokens: int,
    min_new_tokens: int | None,
    num_beams: int,
    repetition_penalty: float,
    no_repeat_ngram_size: int,
) -> dict[str, Any]:
    """generate()'s decoding arguments, greedy unless asked otherwise (as Kosmos-2's are)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": num_beams,
        "use_cache": True,
    }
    if repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = repetition_penalty
    if no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
    if min_new_tokens is not None:
        kwargs["min_new_tokens"] = min_new_tokens
    return kwargs
