"""LLaVA and LLaVA-OneVision (JoyCaption is a LLaVA): chat template, no boxes.

LLaVA's input size is fixed (336 px, 576 image tokens), so no photo can cost more. LLaVA-
OneVision tiles a photo into crops of 384 px on the best of its grid's resolutions
("anyres"). Its cap is approximate: the photo is shrunk to the cap's pixel count before
tiling, which picks a smaller grid, but the grid, not the cap, sets the final count (one
base view plus the crops). OneVision's processor also holds a video processor, which needs
torchvision: kcap loads it without it (image_only.py), so it needs no extra.
"""

from __future__ import annotations

from workers.captioning.families.chat import ChatCaptioner

MODEL_TYPES = ("llava", "llava_onevision")
FAMILIES = {"llava": "llava", "llava_onevision": "llava-onevision"}
# model_type -> modules its processor imports beyond the models extra.
NEEDS: dict[str, tuple[str, ...]] = {}


class LlavaCaptioner(ChatCaptioner):
    family = "llava"


class LlavaOnevisionCaptioner(ChatCaptioner):
    family = "llava-onevision"
    processor_class = "LlavaOnevisionProcessor"
    # anyres: one 384 px crop is 729 tokens; a photo gets at most the cap's worth of crops.
    pixels_per_token = (384 * 384) // 729


CLASSES = {"llava": LlavaCaptioner, "llava_onevision": LlavaOnevisionCaptioner}
