"""CLIP scoring of captions against images, with token-aware chunking.

The score is 100 x cosine(image, text), which is CLIP's logits_per_image scale; a caption
longer than CLIP's 77-token window is cut at sentence boundaries into chunks that fit, and
the chunk scores are averaged. (The original script cut every 77 *characters*.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from workers.captioning.loading import load_model

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@dataclass(frozen=True)
class Score:
    score: float  # 100 x mean cosine over chunks
    clipscore: float  # 2.5 x max(mean cosine, 0)
    chunks: int


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text.strip())) if s]


def chunk_caption(text: str, count_tokens: Any, *, budget: int) -> list[str]:
    """Pack whole sentences into chunks of at most `budget` tokens.

    A sentence longer than the budget is cut between words. count_tokens maps a list of
    strings to their token counts (without special tokens).
    """
    sentences = split_sentences(text)
    if not sentences:
        return [text.strip()]
    chunks: list[str] = []
    fitting: list[tuple[str, int]] = []  # the run of sentences since the last long one
    for sentence, size in zip(sentences, count_tokens(sentences), strict=True):
        if size <= budget:
            fitting.append((sentence, size))
            continue
        chunks.extend(_pack(fitting, budget=budget))
        fitting = []
        words = sentence.split()
        chunks.extend(_pack(list(zip(words, count_tokens(words), strict=True)), budget=budget))
    return chunks + _pack(fitting, budget=budget)


def _pack(pieces: list[tuple[str, int]], *, budget: int) -> list[str]:
    """Greedily join (text, tokens) pieces with spaces into chunks of at most budget tokens.

    A joining space adds no token for CLIP's BPE, which splits on whitespace. A single piece
    over the budget stays whole (a word the tokenizer then truncates, never drops).
    """
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece, size in pieces:
        if current and used + size > budget:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(piece)
        used += size
    if current:
        chunks.append(" ".join(current))
    return chunks


class Scorer:
    """One CLIP model and processor, loaded once per worker process."""

    def __init__(self, source: str, *, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import CLIPModel

        self.source = source
        self.device = device
        self.dtype = dtype
        self.processor, self.model = load_model(
            CLIPModel.from_pretrained,
            source,
            flag="--clip-model",
            what="CLIP model",
            device=device,
            dtype=dtype,
        )
        self.tokenizer = self.processor.tokenizer
        self.max_length = int(getattr(self.tokenizer, "model_max_length", 77) or 77)
        if self.max_length > 10_000:  # "unset" sentinel in some tokenizer configs
            self.max_length = int(self.model.config.text_config.max_position_embeddings)

    # -- preprocess (CPU) ----------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def chunks(self, caption: str) -> list[str]:
        return chunk_caption(caption, self._count_tokens, budget=self.max_length - 2)

    def _count_tokens(self, texts: list[str]) -> list[int]:
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    # -- forward (device) ----------------------------------------------------
    @torch.inference_mode()
    def forward(self, pixel_values: list[torch.Tensor], chunk_lists: list[list[str]]) -> torch.Tensor:
        """Mean cosine per (image, its chunks), for the whole batch in one pass per tower."""
        texts = [chunk for chunks in chunk_lists for chunk in chunks]
        owner = torch.tensor([i for i, chunks in enumerate(chunk_lists) for _ in chunks])
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pixels = torch.stack(pixel_values).to(self.device, dtype=self.dtype)
        image_embeds = _embedding(self.model.get_image_features(pixel_values=pixels))
        text_embeds = _embedding(self.model.get_text_features(**tokens))
        image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
        text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
        cosines = (text_embeds * image_embeds[owner.to(self.device)]).sum(dim=-1).cpu()
        sums = torch.zeros(len(chunk_lists)).index_add_(0, owner, cosines)
        counts = torch.bincount(owner, minlength=len(chunk_lists)).float()
        return sums / counts

    # -- postprocess ---------------------------------------------------------
    @staticmethod
    def postprocess(mean_cosines: torch.Tensor, chunk_lists: list[list[str]]) -> list[Score]:
        return [
            Score(score=100.0 * float(c), clipscore=2.5 * max(float(c), 0.0), chunks=len(chunks))
            for c, chunks in zip(mean_cosines.tolist(), chunk_lists, strict=True)
        ]


def _embedding(output: Any) -> torch.Tensor:
    """get_*_features returns a tensor in some transformers versions, an output object in others."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    return output[0]
