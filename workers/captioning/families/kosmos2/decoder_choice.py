"""Auto-choice of the caption decoder: kcap's static one only where it writes what generate writes.

Invariant: kcap-static is chosen only for Kosmos-2 with plain greedy decoding: one beam, no
repetition controls, no minimum length, and a model generation config that adds no logits
processor of its own (a processor would change which token wins, and the static decoder
applies none). Everything else, and `--decoder generate`, keeps transformers' generate.
"""

from __future__ import annotations

from typing import Any

from shared.core.decoding import Decoder, DecoderChoice

# generation_config fields that make generate add a logits processor or change the search,
# with the values that leave greedy decoding untouched.
_PLAIN_GENERATION: dict[str, tuple[Any, ...]] = {
    "do_sample": (None, False),
    "num_beams": (None, 1),
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "renormalize_logits": (None, False),
    "max_time": (None,),
    "stop_strings": (None,),
    "watermarking_config": (None,),
    "assistant_model": (None,),
    "prompt_lookup_num_tokens": (None,),
}


def choose_decoder(
    model: Any,
    choice: str,
    *,
    num_beams: int = 1,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    min_new_tokens: int | None = None,
) -> Decoder:
    """The decoder that runs a batch with these options on this model."""
    if DecoderChoice(choice) is DecoderChoice.GENERATE:
        return Decoder.GENERATE
    if type(model).__name__ != "Kosmos2ForConditionalGeneration":
        return Decoder.GENERATE
    if num_beams != 1 or repetition_penalty != 1.0 or no_repeat_ngram_size or min_new_tokens:
        return Decoder.GENERATE
    return Decoder.KCAP_STATIC if not plain_generation_issues(model) else Decoder.GENERATE


def plain_generation_issues(model: Any) -> list[str]:
    """The model's generation_config fields that the static decoder would not honour."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return []
    return [
        f"{name}={getattr(config, name)!r}"
        for name, plain in _PLAIN_GENERATION.items()
        if getattr(config, name, None) not in plain
    ]
