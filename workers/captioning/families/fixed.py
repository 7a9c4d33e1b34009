"""Captioners with a fixed input size and a plain-text prompt: Florence-2 and BLIP-2.

Every image is resized to the same size and every row of a batch shares its prompt, so, as
for Kosmos-2, the pixels are made in preprocess (the pool threads) and the prompt's tokens
once per prompt: no padding ever differs between a batch and single images. Family modules
set the preset forms and say where the new tokens start.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image

from workers.captioning.families.base import GenerateCaptioner, family_prompt
from workers.captioning.generation import decoding_kwargs
from workers.captioning.loading import load_caption_model


class FixedInputCaptioner(GenerateCaptioner):
    family: ClassVar[str] = "fixed"
    forms: ClassVar[dict[str, str]] = {}

    def __init__(
        self, source: str, *, device: torch.device, dtype: torch.dtype, max_image_tokens: int
    ) -> None:
        del max_image_tokens  # a fixed input size: the same number of tokens for every photo
        self.source = source
        self.device = device
        self.dtype = dtype
        self.processor, self.model = load_caption_model(source, device=device, dtype=dtype)
        self._prompt_cache: dict[str, dict[str, torch.Tensor]] = {}

    def prompt_for(self, prompt: str) -> str:
        return family_prompt(prompt, self.forms)

    # -- preprocess (CPU) ------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _prompt_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask of one prompt (image placeholders included), cached."""
        cached = self._prompt_cache.get(prompt)
        if cached is None:
            blank = Image.new("RGB", (8, 8))
            encoded = self.processor(text=self.prompt_for(prompt), images=blank, return_tensors="pt")
            cached = {k: encoded[k] for k in ("input_ids", "attention_mask")}
            self._prompt_cache[prompt] = cached
        return cached

    def new_tokens(self, generated: torch.Tensor, *, prompt_len: int) -> torch.Tensor:
        """The generated ids without what precedes the new tokens (a family hook)."""
        raise NotImplementedError

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
        n = len(items)
        text = self._prompt_inputs(prompt)
        generated = self.model.generate(
            pixel_values=torch.stack(items).to(self.device, dtype=self.dtype),
            input_ids=text["input_ids"].expand(n, -1).to(self.device),
            attention_mask=text["attention_mask"].expand(n, -1).to(self.device),
            **decoding_kwargs(
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                num_beams=num_beams,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            ),
        )
        return self.new_tokens(generated, prompt_len=text["input_ids"].shape[1]).cpu()
