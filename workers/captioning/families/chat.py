"""Chat VLMs: the prompt goes through the checkpoint's own chat template.

Shared by Qwen2.5-VL / Qwen3-VL, LLaVA / LLaVA-OneVision and Idefics3 / SmolVLM; each
family's module only says how its processor takes a batch of images and how to cap its
image tokens. The invariants:

- The processor sees text and images together (it expands the image placeholder to as many
  tokens as that image needs), so preprocess only caps the image's size and forward runs
  the processor: that part of the CPU work happens in the batch thread.
- Rows are padded on the left: a decoder-only model continues each row from its last
  token, so right padding would put pads between a short prompt and its caption. Rows of
  one batch share one prompt but not always one length (dynamic resolution gives a
  different number of image tokens per image).
- Decoding is greedy unless told otherwise, as Kosmos-2's, so a batch writes what single
  images write (tested).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from PIL import Image

from shared.core.errors import ConfigError
from workers.captioning.families.base import GenerateCaptioner, family_prompt
from workers.captioning.families.image_only import image_only
from workers.captioning.generation import decoding_kwargs
from workers.captioning.loading import load_caption_model

log = logging.getLogger(__name__)

# The instruction each preset becomes for a chat model.
CHAT_FORMS: dict[str, str] = {
    "detailed": (
        "Give a detailed description of this image, including any subject matter, "
        "style of art if any, and the context."
    ),
    "brief": "Describe this image in one short sentence.",
}


class ChatCaptioner(GenerateCaptioner):
    """One chat VLM and its processor; the family module sets the class attributes."""

    family = "chat"
    # Idefics3 / SmolVLM take a list of images per text row; the others a flat list.
    nested_images = False
    # Pixels per image token: a photo over max_image_tokens x this is shrunk first. 0: the
    # family's input size is fixed (LLaVA's 336 px), so no photo can cost more tokens.
    pixels_per_token = 0
    # A longest edge the processor would resize to anyway (tiling families): a bigger photo is
    # shrunk to it here, so a 24 MP photo waits for its batch as a small image. 0: none.
    max_edge = 0
    # transformers' processor class, for a family whose processor also takes video: it is
    # loaded without its video part (image_only.py). "": AutoProcessor's choice.
    processor_class = ""

    def __init__(
        self, source: str, *, device: torch.device, dtype: torch.dtype, max_image_tokens: int
    ) -> None:
        self.source = source
        self.device = device
        self.dtype = dtype
        self.max_image_tokens = max_image_tokens
        loader = image_only(self.processor_class).from_pretrained if self.processor_class else None
        self.processor, self.model = load_caption_model(
            source, device=device, dtype=dtype, processor_loader=loader
        )
        if not getattr(self.processor, "chat_template", None):
            # Found at start rather than on every job: without it no prompt can be built.
            raise ConfigError(
                f"caption model {source} ({self.family}) has no chat template: pass a chat "
                f"(instruct) checkpoint, or one whose folder holds chat_template.jinja"
            )
        self.processor.tokenizer.padding_side = "left"
        self.cap_image_tokens(max_image_tokens)
        self._templates: dict[str, str] = {}

    # -- family hooks ----------------------------------------------------------
    def cap_image_tokens(self, max_image_tokens: int) -> None:
        """Tell the processor the cap, where it has a setting for it (a family hook)."""

    # -- preprocess (CPU) ------------------------------------------------------
    def preprocess(self, image: Image.Image) -> Image.Image:
        """The image, shrunk (aspect kept) when it would take more than the image-token cap.

        The processor itself runs in forward, where it sees the prompt too.
        """
        scale = 1.0
        if self.pixels_per_token:
            budget = self.max_image_tokens * self.pixels_per_token
            scale = min(scale, math.sqrt(budget / (image.width * image.height)))
        if self.max_edge:
            scale = min(scale, self.max_edge / max(image.width, image.height))
        if scale >= 1.0:
            return image
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        return image.resize(size, Image.Resampling.BICUBIC)

    def prompt_for(self, prompt: str) -> str:
        return family_prompt(prompt, CHAT_FORMS)

    def _chat_text(self, prompt: str) -> str:
        """The prompt through the checkpoint's chat template, with one image, cached."""
        text = self._templates.get(prompt)
        if text is None:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": self.prompt_for(prompt)}],
                }
            ]
            text = str(self.processor.apply_chat_template(messages, add_generation_prompt=True))
            self._templates[prompt] = text
        return text

    # -- forward (device) ------------------------------------------------------
    @torch.inference_mode()
    def forward(
        self,
        items: list[Any],
        *,
        prompt: str,
        max_new_tokens: int,
        min_new_tokens: int | None = None,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> torch.Tensor:
        """Generation for a batch; only the new token ids, on the CPU."""
        text = self._chat_text(prompt)
        images: list[Any] = [[image] for image in items] if self.nested_images else list(items)
        inputs = self.processor(
            text=[text] * len(items), images=images, return_tensors="pt", padding=True, padding_side="left"
        )
        prompt_len = inputs["input_ids"].shape[1]
        generated = self.model.generate(
            **self._on_device(inputs),
            **decoding_kwargs(
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                num_beams=num_beams,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            ),
        )
        # A decoder-only model returns prompt + new tokens; the prompt is cut off by position.
        return generated[:, prompt_len:].cpu()

    def _on_device(self, inputs: Any) -> dict[str, Any]:
        """Every tensor on the device; floating ones (pixels) in the model's dtype."""
        moved: dict[str, Any] = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                floating = value.is_floating_point()
                moved[key] = value.to(self.device, dtype=self.dtype if floating else value.dtype)
            else:
                moved[key] = value
        return moved
