"""CLIP scoring of captions against images, both ways at once (shared.core.scoring).

- original: the original script's statistic, computed its way. The caption as written is cut
  every 77 characters, and the slices' logits_per_image (the model's own logit scale x
  cosine) are averaged. The default: the threshold of 15 was set against this number.
- sentence-chunks: whole sentences packed into chunks that fit CLIP's 77-token window (a
  sentence longer than that is cut between words), and 100 x the chunks' mean cosine.

CLIPScore (Hessel et al.), 2.5 x max(mean cosine over the sentence chunks, 0), is kept too.
One batch is one pass of each tower: every image once, every distinct text once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from PIL import Image

from shared.core.scoring import ORIGINAL_SLICE_CHARS, ScoreMethod, Statistic
from workers.captioning.loading import load_model

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@dataclass(frozen=True)
class Score:
    original: float | None  # mean logits_per_image over the 77-character slices; CLIP only
    sentence_chunks: float  # 100 x mean cosine over the sentence chunks
    clipscore: float  # 2.5 x max(mean cosine over the sentence chunks, 0)
    slices: int
    chunks: int
    # A sigmoid family's own statistic (SigLIP): the mean match probability over the
    # sentence chunks. None for CLIP.
    sigmoid: float | None = None
    family: str = "clip"  # the scorer family (shared.core.scoring.ScorerFamily)

    def routing(self, method: str) -> float:
        """The score that is compared with the threshold."""
        if method != ScoreMethod.ORIGINAL:
            return self.sentence_chunks
        if self.original is not None:
            return self.original
        # The original script's statistic exists for CLIP only; a sigmoid family's default
        # is its own probability-like score.
        return self.sigmoid if self.sigmoid is not None else self.sentence_chunks

    def statistic(self, method: str) -> str:
        """Which statistic routing(method) is, as the record names it."""
        if method == ScoreMethod.ORIGINAL and self.original is None and self.sigmoid is not None:
            return Statistic.SIGMOID.value
        return method


def original_slices(caption: str) -> list[str]:
    """The original script's cut: every 77 characters of the caption as written.

    An empty caption is one empty slice (the script would have had nothing to score).
    """
    step = ORIGINAL_SLICE_CHARS
    return [caption[i : i + step] for i in range(0, len(caption), step)] or [""]


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text.strip())) if s]


def token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens in each text. Only counted, never run through the model, so a long one is not
    worth the tokenizer's "will result in indexing errors" warning (verbose=False)."""
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [len(ids) for ids in encoded]


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

    family = "clip"

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
        self.logit_scale = _logit_scale(source, self.model)

    # -- preprocess (CPU) ----------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def chunks(self, caption: str) -> list[str]:
        return chunk_caption(caption, partial(token_counts, self.tokenizer), budget=self.max_length - 2)

    # -- forward (device) ----------------------------------------------------
    @torch.inference_mode()
    def forward(self, pixel_values: list[torch.Tensor], text_lists: list[list[str]]) -> list[torch.Tensor]:
        """The cosine of each image with each of its texts (float32, on the CPU).

        One pass per tower for the whole batch; a text that occurs several times (both cuts
        of a short caption, or the same caption twice) is encoded once. As in the original
        script's processor call the texts are padded; a text over CLIP's window (a
        77-character slice of unusual characters can be) is truncated to it, where the
        script's CLIP call would have failed.
        """
        unique = list(dict.fromkeys(text for texts in text_lists for text in texts))
        tokens = self.tokenizer(
            unique, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pixels = torch.stack(pixel_values).to(self.device, dtype=self.dtype)
        image_embeds = _embedding(self.model.get_image_features(pixel_values=pixels))
        text_embeds = _embedding(self.model.get_text_features(**tokens))
        image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
        text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
        cosines = (image_embeds @ text_embeds.T).cpu()  # (images, distinct texts)
        column = {text: i for i, text in enumerate(unique)}
        return [cosines[row, [column[t] for t in texts]] for row, texts in enumerate(text_lists)]

    # -- the whole step --------------------------------------------------------
    def score(self, pixel_values: list[torch.Tensor], captions: list[str]) -> list[Score]:
        """Both scores of each caption against its image, for a batch in one pass."""
        slice_lists = [original_slices(caption) for caption in captions]
        chunk_lists = [self.chunks(caption) for caption in captions]
        cosines = self.forward(pixel_values, [s + c for s, c in zip(slice_lists, chunk_lists, strict=True)])
        return self.postprocess(cosines, slice_lists, chunk_lists)

    # -- postprocess ---------------------------------------------------------
    def postprocess(
        self, cosines: list[torch.Tensor], slice_lists: list[list[str]], chunk_lists: list[list[str]]
    ) -> list[Score]:
        scores = []
        for row, slices, chunks in zip(cosines, slice_lists, chunk_lists, strict=True):
            by_slice, by_chunk = row[: len(slices)], row[len(slices) :]
            chunk_cosine = float(by_chunk.mean())
            scores.append(
                Score(
                    original=float((self.logit_scale * by_slice).mean()),
                    sentence_chunks=100.0 * chunk_cosine,
                    clipscore=2.5 * max(chunk_cosine, 0.0),
                    slices=len(slices),
                    chunks=len(chunks),
                )
            )
        return scores


def _logit_scale(source: str, model: Any) -> torch.Tensor:
    """exp(logit_scale) in float32, as the original script's fp32 model had it.

    In bf16 CLIP-L's log(100) rounds to 4.594, which scales every score by 0.989: enough to
    move images across the threshold. So the checkpoint's own float32 value is read when the
    model runs in lower precision.
    """
    scale = model.logit_scale.detach()
    if scale.dtype != torch.float32:
        try:
            from safetensors import safe_open
            from transformers.utils import cached_file

            path = cached_file(source, "model.safetensors")
            if path is not None:
                with safe_open(path, framework="pt") as weights:
                    scale = weights.get_tensor("logit_scale")
        except Exception as exc:  # a sharded or .bin checkpoint: keep the rounded value
            log.warning(
                "%s: float32 logit_scale not readable (%s); scores use the %s one", source, exc, scale.dtype
            )
    return scale.float().exp().cpu()


def _embedding(output: Any) -> torch.Tensor:
    """get_*_features returns a tensor in some transformers versions, an output object in others."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    return output[0]
