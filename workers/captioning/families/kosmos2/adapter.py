"""Kosmos-2: today's captioner, unchanged; this adapter only names its family.

Its prompts are the presets' own text (the presets were written for it), its captions
come with grounded entities and boxes, and `--compile` applies to it alone.
"""

from __future__ import annotations

import torch

from workers.captioning.families.kosmos2.captioner import Captioner

MODEL_TYPES = ("kosmos-2",)
FAMILIES = {"kosmos-2": "kosmos-2"}
NEEDS: dict[str, tuple[str, ...]] = {}


class Kosmos2Adapter(Captioner):
    """The existing Kosmos-2 captioner, byte for byte: preprocess, forward and postprocess are
    inherited, so its captions and routing stay what they were."""

    family = "kosmos-2"

    def __init__(
        self,
        source: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_image_tokens: int = 0,
        decoder: str = "generate",
        decoder_slots: int = 32,
        compile_decoder: bool = False,
    ) -> None:
        del max_image_tokens  # a fixed 224 px input: 64 image tokens, whatever the photo
        super().__init__(
            source,
            device=device,
            dtype=dtype,
            decoder=decoder,
            decoder_slots=decoder_slots,
            compile_decoder=compile_decoder,
        )

    def prompt_for(self, prompt: str) -> str:
        return prompt


CLASSES = {"kosmos-2": Kosmos2Adapter}
