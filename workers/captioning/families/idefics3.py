"""Idefics3 and SmolVLM: chat template, images split into tiles, no boxes.

Their processor resizes a photo so its longest edge is at most ``size["longest_edge"]``,
then cuts it into tiles of ``max_image_size`` (each tile one image's worth of tokens) plus
a global view. The cap lowers that longest edge so the tiles' tokens stay within
``--max-image-tokens``. SmolVLM's processor also holds a video processor, which needs
torchvision: kcap loads it without it (image_only.py). It needs num2words (for its video
prompts, yet checked whenever it is made), which the `models` extra brings.
"""

from __future__ import annotations

import math

from workers.captioning.families.chat import ChatCaptioner

MODEL_TYPES = ("idefics3", "smolvlm")
FAMILIES = {"idefics3": "idefics3", "smolvlm": "smolvlm"}
NEEDS = {"smolvlm": ("num2words",)}


class Idefics3Captioner(ChatCaptioner):
    family = "idefics3"
    nested_images = True

    def cap_image_tokens(self, max_image_tokens: int) -> None:
        images = self.processor.image_processor
        tile = int(images.max_image_size["longest_edge"])
        per_tile = int(getattr(self.processor, "image_seq_len", 0) or 1)
        # Tiles that fit the cap, the global view counted as one more.
        tiles = max(1, max_image_tokens // per_tile - 1)
        side = max(1, math.isqrt(tiles))
        longest = max(tile, side * tile)
        size = dict(images.size)
        if int(size.get("longest_edge", longest)) > longest:
            size["longest_edge"] = longest
            images.size = size
        self.max_edge = int(size.get("longest_edge", longest))


class SmolVLMCaptioner(Idefics3Captioner):
    family = "smolvlm"
    processor_class = "SmolVLMProcessor"


CLASSES = {"idefics3": Idefics3Captioner, "smolvlm": SmolVLMCaptioner}
