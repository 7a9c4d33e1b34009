"""The processors of the chat families that also take video, loaded without their video part.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM and LLaVA-OneVision processors hold a video
processor beside the image processor and the tokenizer. transformers builds its video
processors on torchvision alone, and a processor checks each of its parts' classes when it
is made, so without torchvision even a processor that is given no video processor fails
(``VIDEO_PROCESSOR_MAPPING has no attribute '_extra_content'``). Captioning sends no video.
The class made here is the family's own processor class, less the video processor among
its parts: ``from_pretrained`` then loads the image processor (its PIL backend where
torchvision is missing) and the tokenizer, and the processor's ``__call__`` runs unchanged
for images and text. So these families need no torchvision, and run here as the others do.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import transformers
from transformers import ProcessorMixin


class NoVideo:
    """Stands where the video processor was: SmolVLM's apply_chat_template reads its frame
    settings for every conversation, with video or without; they matter only for video."""

    num_frames = None
    fps = None


class ImageOnlyProcessor(ProcessorMixin):
    """Mixed in before a family's processor class: every part of it but the video processor."""

    video_processor = NoVideo()

    @classmethod
    def get_attributes(cls) -> list[str]:
        # The parts __init__ checks, from_pretrained loads and save_pretrained writes.
        return [name for name in super().get_attributes() if name != "video_processor"]

    @classmethod
    def from_dict(cls, processor_dict: dict[str, Any], **kwargs: Any) -> Any:
        # SmolVLM's __init__ takes video_processor without a default: None is passed on, and
        # ProcessorMixin.__init__ keeps only the parts get_attributes names.
        return super().from_dict(processor_dict, **{"video_processor": None, **kwargs})


@cache
def image_only(processor_class: str) -> type[ProcessorMixin]:
    """transformers' processor class of this name, without its video processor.

    It keeps the class's name, so a processor it saves names the real class in its
    processor_config.json, as a hub checkpoint of the family does.
    """
    base = getattr(transformers, processor_class)
    made: type[ProcessorMixin] = type(processor_class, (ImageOnlyProcessor, base), {"__module__": __name__})
    return made
