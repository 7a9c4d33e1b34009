"""SigLIP and SigLIP 2 scoring: a sigmoid match probability per caption, not CLIP's 100 x cosine.

SigLIP was trained with a sigmoid loss: sigmoid(exp(logit_scale) x cosine + logit_bias) is
the model's probability that the text matches the image, on its own (no softmax over other
captions). A caption is packed into sentence chunks that fit the text window (64 tokens),
as CLIP's sentence-chunk score is, each chunk is padded to the window, as SigLIP was
trained ("max_length" padding; other padding changes its text embedding), and:

- sigmoid: the chunks' mean probability. The default statistic, compared with the
  family's own threshold (shared.core.thresholds).
- sentence-chunks: 100 x the chunks' mean cosine, the same form as CLIP's.
- clipscore: 2.5 x max(mean cosine, 0).

SigLIP 2's NaFlex processor keeps each image's aspect ratio: its pixels come padded to a
fixed number of patches with a mask and the patch grid, so a batch stacks like fixed-size
pixels do.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from PIL import Image

from workers.captioning.loading import load_model
from workers.captioning.scorers.clip import Score, _embedding, chunk_caption, token_counts

log = logging.getLogger(__name__)

MODEL_TYPES = ("siglip", "siglip2")
# Its text window, when the checkpoint's tokenizer config does not say.
_WINDOW = 64


class SiglipScorer:
    """One SigLIP or SigLIP 2 model and processor, loaded once per worker process."""

    def __init__(self, source: str, *, family: str, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoModel

        self.source = source
        self.family = family
        self.device = device
        self.dtype = dtype
        self.processor, self.model = load_model(
            AutoModel.from_pretrained,
            source,
            flag="--clip-model",
            what="SigLIP model",
            device=device,
            dtype=dtype,
        )
        self.tokenizer = self.processor.tokenizer
        window = int(self.model.config.text_config.max_position_embeddings)
        self.max_length = min(window, int(getattr(self.tokenizer, "model_max_length", window) or window))
        # Read in float32 whatever the model's dtype: bf16 would round the scale and bias.
        self.logit_scale = self.model.logit_scale.detach().float().exp().cpu()
        self.logit_bias = self.model.logit_bias.detach().float().cpu()

    # -- preprocess (CPU) ------------------------------------------------------
    def preprocess(self, image: Image.Image) -> dict[str, torch.Tensor]:
        encoded = self.processor.image_processor(images=image, return_tensors="pt")
        return {key: value[0] for key, value in encoded.items() if isinstance(value, torch.Tensor)}

    def chunks(self, caption: str) -> list[str]:
        # No special tokens to leave room for: SigLIP's text has only an end token at most.
        return chunk_caption(caption, partial(token_counts, self.tokenizer), budget=self.max_length - 1)

    # -- forward (device) ------------------------------------------------------
    @torch.inference_mode()
    def forward(
        self, items: list[dict[str, torch.Tensor]], text_lists: list[list[str]]
    ) -> list[torch.Tensor]:
        """The cosine of each image with each of its texts (float32, on the CPU)."""
        unique = list(dict.fromkeys(text for texts in text_lists for text in texts))
        tokens = self.tokenizer(
            unique, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        # What the checkpoint's tokenizer gives, as its own processor would pass it: SigLIP's
        # gives no attention mask (it was trained attending to the padding), SigLIP 2's does.
        text_inputs = {
            k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
        }
        pixels = {
            key: torch.stack([item[key] for item in items]).to(
                self.device, dtype=self.dtype if items[0][key].is_floating_point() else None
            )
            for key in items[0]
        }
        image_embeds = _embedding(self.model.get_image_features(**pixels))
        text_embeds = _embedding(self.model.get_text_features(**text_inputs))
        image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
        text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
        cosines = (image_embeds @ text_embeds.T).cpu()
        column = {text: i for i, text in enumerate(unique)}
        return [cosines[row, [column[t] for t in texts]] for row, texts in enumerate(text_lists)]

    # -- the whole step --------------------------------------------------------
    def score(self, pixel_values: list[Any], captions: list[str]) -> list[Score]:
        chunk_lists = [self.chunks(caption) for caption in captions]
        cosines = self.forward(pixel_values, chunk_lists)
        scores = []
        for row, chunks in zip(cosines, chunk_lists, strict=True):
            probability = torch.sigmoid(self.logit_scale * row + self.logit_bias)
            cosine = float(row.mean())
            scores.append(
                Score(
                    original=None,
                    sentence_chunks=100.0 * cosine,
                    clipscore=2.5 * max(cosine, 0.0),
                    slices=0,
                    chunks=len(chunks),
                    sigmoid=float(probability.mean()),
                    family=self.family,
                )
            )
        return scores
