"""BLIP-2: a plain-text prompt after the Q-Former's query tokens, a fixed input size (224 px).

Unprompted, BLIP-2 writes a short caption: that is the brief preset. The detailed preset
asks in its question/answer form. It gives no boxes. Its generate returns the prompt (the
query placeholders included) before the new tokens, which are cut off by position.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from workers.captioning.families.fixed import FixedInputCaptioner

MODEL_TYPES = ("blip-2",)
FAMILIES = {"blip-2": "blip-2"}
NEEDS: dict[str, tuple[str, ...]] = {}


class Blip2Captioner(FixedInputCaptioner):
    family: ClassVar[str] = "blip-2"
    forms: ClassVar[dict[str, str]] = {
        "detailed": "Question: Describe this image in detail. Answer:",
        "brief": "",
    }

    def new_tokens(self, generated: torch.Tensor, *, prompt_len: int) -> torch.Tensor:
        return generated[:, prompt_len:]


CLASSES = {"blip-2": Blip2Captioner}
