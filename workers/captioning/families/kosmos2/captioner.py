"""Kosmos-2 captioning, split as preprocess (CPU, PIL), forward (the device) and postprocess.

Only `forward` (transformers' generate) and `forward_static` (kcap's static-cache decoder)
touch the device; `caption_ids` picks one of them per batch (decoder_choice.py) and says
which. Every image in a batch shares the prompt, so the prompt tokens are built once and no
padding ever differs between a batch and single images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from shared.core.decoding import Decoder
from shared.core.messages import Entity
from workers.captioning.families.kosmos2.decoder_choice import choose_decoder
from workers.captioning.families.kosmos2.kosmos2_decoder import Kosmos2Decoder, PromptInputs, pad_rows
from workers.captioning.generation import decoding_kwargs, eos_ids_of, truncated_rows
from workers.captioning.loading import load_caption_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caption:
    text: str
    entities: list[Entity]
    truncated: bool = False  # generation stopped at the token limit, not at end-of-text


class Captioner:
    """One Kosmos-2 model and processor, loaded once per worker process."""

    def __init__(
        self,
        source: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        decoder: str = "generate",
        decoder_slots: int = 32,
        compile_decoder: bool = False,
    ) -> None:
        self.source = source
        self.decoder_choice = decoder
        self.decoder_slots = decoder_slots
        self.compile_decoder = compile_decoder
        self._static: Kosmos2Decoder | None = None
        self.device = device
        self.dtype = dtype
        self.processor, self.model = load_caption_model(source, device=device, dtype=dtype)
        self._prompt_cache: dict[str, dict[str, torch.Tensor]] = {}

    # -- preprocess (CPU) ----------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Pixel values for one image, shape (3, H, W), on the CPU."""
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        return pixels[0]

    def _prompt_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and image_embeds_position_mask for one prompt, cached."""
        cached = self._prompt_cache.get(prompt)
        if cached is None:
            blank = Image.new("RGB", (8, 8))
            encoded = self.processor(text=prompt, images=blank, return_tensors="pt")
            cached = {k: encoded[k] for k in ("input_ids", "attention_mask", "image_embeds_position_mask")}
            self._prompt_cache[prompt] = cached
        return cached

    # -- forward (device) ----------------------------------------------------
    @torch.inference_mode()
    def forward(
        self,
        pixel_values: list[torch.Tensor],
        *,
        prompt: str,
        max_new_tokens: int,
        min_new_tokens: int | None = None,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> torch.Tensor:
        """Generation for a batch (greedy by default); only the new token ids, on the CPU."""
        n = len(pixel_values)
        text = self._prompt_inputs(prompt)
        pixels = torch.stack(pixel_values).to(self.device, dtype=self.dtype, non_blocking=True)
        kwargs: dict[str, Any] = {
            "pixel_values": pixels,
            "input_ids": text["input_ids"].expand(n, -1).to(self.device),
            "attention_mask": text["attention_mask"].expand(n, -1).to(self.device),
            "image_embeds": None,
            "image_embeds_position_mask": text["image_embeds_position_mask"].expand(n, -1).to(self.device),
            **decoding_kwargs(
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                num_beams=num_beams,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            ),
        }
        generated = self.model.generate(**kwargs)
        prompt_len = text["input_ids"].shape[1]
        # Kosmos-2's generate returns prompt + new tokens: the echo is cut off by position.
        if generated.shape[1] > prompt_len and torch.equal(
            generated[0, :prompt_len].cpu(), text["input_ids"][0]
        ):
            generated = generated[:, prompt_len:]
        return generated.cpu()

    def decoder_for(
        self, *, num_beams: int = 1, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0
    ) -> Decoder:
        """The decoder that runs items with these decoding options (decoder_choice.py)."""
        return choose_decoder(
            self.model,
            self.decoder_choice,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )

    def prompt_inputs(self, prompt: str) -> PromptInputs:
        """One prompt's tokens as kcap's static decoder takes them."""
        return PromptInputs(**self._prompt_inputs(prompt))

    def caption_ids(
        self,
        pixel_values: list[torch.Tensor],
        *,
        prompt: str,
        max_new_tokens: int,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> tuple[torch.Tensor, Decoder]:
        """New token ids of a batch from the decoder chosen for these options, and which it was."""
        decoder = self.decoder_for(
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        if decoder is Decoder.KCAP_STATIC:
            return self.forward_static(pixel_values, prompt=prompt, max_new_tokens=max_new_tokens), decoder
        ids = self.forward(
            pixel_values,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return ids, decoder

    @property
    def static_decoder(self) -> Kosmos2Decoder:
        """kcap's decoder over this model, made on first use (its cache on the first batch)."""
        if self._static is None:
            config = self.model.generation_config
            self._static = Kosmos2Decoder(
                self.model,
                slots=self.decoder_slots,
                eos_token_ids=sorted(eos_ids_of(self.model)),
                pad_token_id=config.pad_token_id if config.pad_token_id is not None else 1,
                compile_step=self.compile_decoder,
            )
        return self._static

    @torch.inference_mode()
    def forward_static(
        self, pixel_values: list[torch.Tensor], *, prompt: str, max_new_tokens: int
    ) -> torch.Tensor:
        """Greedy new token ids of a batch from kcap's static decoder, padded as generate pads."""
        decoder = self.static_decoder
        rows = decoder.generate(
            pixel_values, prompt=self.prompt_inputs(prompt), max_new_tokens=max_new_tokens
        )
        return pad_rows(rows, pad_token_id=decoder.pad_token_id)

    # -- postprocess (plain data) -------------------------------------------
    def postprocess(self, new_ids: torch.Tensor, *, max_new_tokens: int | None = None) -> list[Caption]:
        """Text and grounded entities for each row of new token ids."""
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        cut = truncated_rows(new_ids, eos_ids=eos_ids_of(self.model), max_new_tokens=max_new_tokens)
        captions = []
        for text, truncated in zip(texts, cut, strict=True):
            caption = self.parse(text)
            captions.append(Caption(caption.text, caption.entities, truncated=truncated))
        return captions

    def parse(self, raw: str) -> Caption:
        """One decoded generation (prompt already cut) to text and entities."""
        text, entities = self.processor.post_process_generation(raw, cleanup_and_extract=True)
        return _to_caption(text, entities)


def _to_caption(text: str, raw_entities: list[Any]) -> Caption:
    """Strip surrounding space, shift entity spans to match, keep boxes as plain floats."""
    stripped = text.lstrip()
    shift = len(text) - len(stripped)
    stripped = stripped.rstrip()
    entities = []
    for phrase, (start, end), boxes in raw_entities:
        start, end = start - shift, end - shift
        if start < 0 or end > len(stripped):
            continue
        entities.append(
            Entity(
                phrase=str(phrase),
                start=int(start),
                end=int(end),
                boxes=[[round(float(v), 4) for v in box] for box in boxes],
            )
        )
    return Caption(text=stripped, entities=entities)


def with_pixel_boxes(entities: list[Entity], *, width: int, height: int) -> list[Entity]:
    """The entities with their boxes also in pixels of the upright original image."""
    return [
        Entity(
            phrase=e.phrase,
            start=e.start,
            end=e.end,
            boxes=e.boxes,
            boxes_px=[
                [round(b[0] * width), round(b[1] * height), round(b[2] * width), round(b[3] * height)]
                for b in e.boxes
            ],
        )
        for e in entities
    ]
