"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: chat template, dynamic resolution, no boxes.

Their processor turns each 28 x 28 pixels (patch 14, merged 2 x 2) into one image token
(32 x 32 for Qwen3-VL's patch 16), at any resolution: a 24 MP photo would be some 30,000
tokens. The cap sets the processor's own ``max_pixels``, so its resize keeps the image at
or under ``--max-image-tokens`` tokens. Their processors also hold a video processor, which
needs torchvision: kcap loads them without it (image_only.py), so they need no extra.
"""

from __future__ import annotations

from workers.captioning.families.chat import ChatCaptioner

MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
FAMILIES = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl"}
NEEDS: dict[str, tuple[str, ...]] = {}
# transformers' processor class of each, loaded without its video processor.
PROCESSORS = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}


class QwenVLCaptioner(ChatCaptioner):
    family = "qwen-vl"

    def cap_image_tokens(self, max_image_tokens: int) -> None:
        images = self.processor.image_processor
        side = int(images.patch_size) * int(images.merge_size)
        self.pixels_per_token = side * side
        budget = max_image_tokens * self.pixels_per_token
        # Newer processors keep the bounds in `size`, older ones in max_pixels; set both.
        size = dict(getattr(images, "size", None) or {})
        if "longest_edge" in size:
            size["longest_edge"] = min(int(size["longest_edge"]), budget)
            images.size = size
        if getattr(images, "max_pixels", None):
            images.max_pixels = min(int(images.max_pixels), budget)


def _qwen(model_type: str) -> type[QwenVLCaptioner]:
    family = FAMILIES[model_type]
    attributes = {"family": family, "processor_class": PROCESSORS[model_type]}
    return type(f"{family}Captioner", (QwenVLCaptioner,), attributes)


CLASSES = {model_type: _qwen(model_type) for model_type in MODEL_TYPES}
