"""Florence-2: task tokens as prompts, a fixed input size (768 px), an encoder-decoder.

The presets map to its caption tasks (``<MORE_DETAILED_CAPTION>``, ``<CAPTION>``); any
other text goes to the processor as written (a task token alone, or free text). Its
caption tasks are "pure text": what ``post_process_generation`` returns for them is the
decoded text without ``<s>``/``</s>``, which skipping special tokens gives too. They give
no boxes (grounding is a separate task), so the record's entities are empty.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from workers.captioning.families.fixed import FixedInputCaptioner

MODEL_TYPES = ("florence2",)
FAMILIES = {"florence2": "florence-2"}
NEEDS: dict[str, tuple[str, ...]] = {}


class Florence2Captioner(FixedInputCaptioner):
    family: ClassVar[str] = "florence-2"
    forms: ClassVar[dict[str, str]] = {"detailed": "<MORE_DETAILED_CAPTION>", "brief": "<CAPTION>"}

    def new_tokens(self, generated: torch.Tensor, *, prompt_len: int) -> torch.Tensor:
        # An encoder-decoder returns the decoder's start token, then the new tokens.
        return generated[:, 1:]


CLASSES = {"florence2": Florence2Captioner}
