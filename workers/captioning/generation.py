"""transformers' generate() for every family, in one place: its arguments for kcap's decoding
options, and how a generation ended (the model's end tokens, rows cut short by the limit)."""

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


def truncated_rows(new_ids: Any, *, eos_ids: set[int], max_new_tokens: int | None) -> list[bool]:
    """Per row: the row is full and holds no end token (the limit cut it short)."""
    rows = new_ids.tolist()
    if not max_new_tokens:
        return [False] * len(rows)
    return [len(row) >= max_new_tokens and not (eos_ids & set(row)) for row in rows]


def eos_ids_of(model: Any) -> set[int]:
    """The ids that end a generation (generation_config.eos_token_id: one, a list, or none)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return set(eos if isinstance(eos, list) else [eos])
