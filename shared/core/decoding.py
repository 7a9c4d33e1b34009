"""Which caption decoder wrote a caption, and which the user lets kcap choose from.

Invariant: `generate` (transformers' own) is always available and is what the original
script used. kcap's static-cache decoder is chosen only where it writes the same tokens:
Kosmos-2 with plain greedy decoding. Every per-image record names the one that ran.
"""

from __future__ import annotations

from enum import StrEnum


class Decoder(StrEnum):
    """The decoder that wrote a caption (the `decoder` field of a Result and of its record)."""

    KCAP_STATIC = "kcap-static"  # static KV cache, fixed-shape step, slot scheduler
    GENERATE = "generate"  # transformers' generate


class DecoderChoice(StrEnum):
    """The `--decoder` setting."""

    AUTO = "auto"  # kcap-static where it writes what generate writes, generate elsewhere
    GENERATE = "generate"  # always generate


DECODER_CHOICES: tuple[str, ...] = tuple(c.value for c in DecoderChoice)
