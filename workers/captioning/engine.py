"""Caption-then-score for a batch, with out-of-memory splitting.

`prepare` runs in Celery's pool threads (decode and preprocess on the CPU); `run_batch`
runs in the batcher's single thread and is the only caller of the models' forward passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from shared.core.decoding import Decoder
from shared.core.messages import CaptionOptions, Entity, Job
from shared.core.settings import Settings
from workers.captioning.decode import load_image, open_image, upright_size
from workers.captioning.device import is_out_of_memory, pick_device, pick_dtype
from workers.captioning.families.base import CaptionAdapter
from workers.captioning.families.kosmos2.captioner import Caption, Captioner, with_pixel_boxes
from workers.captioning.families.kosmos2.kosmos2_decoder import Kosmos2Decoder, PromptInputs, pad_rows
from workers.captioning.families.registry import load_for_settings
from workers.captioning.fast_decode import FAST_DECODE_SHORT_SIDE, draft_to_short_side, reduce_to_short_side
from workers.captioning.loading import adopt_library_logs, require_models
from workers.captioning.memory import TRIM_AFTER_PIXELS, release_freed_memory
from workers.captioning.pixel_budget import PixelBudget
from workers.captioning.presize import presize
from workers.captioning.scorers.base import ScorerAdapter
from workers.captioning.scorers.clip import Score
from workers.captioning.scorers.registry import load_scorer as load_family_scorer
from workers.captioning.text_cleanup import clean_caption

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One decoded, preprocessed image, ready for a batch."""

    job_id: str
    caption_pixels: Any  # what the caption family's preprocess made (pixels, or a capped image)
    clip_pixels: Any  # what the scorer family's preprocess made; None when not scored
    width: int
    height: int
    decode_s: float


@dataclass(frozen=True)
class Captioned:
    text: str
    entities: list[Entity]
    score: float | None  # the one that routes: options.route_score picks it from `scores`
    clipscore: float | None
    chunks: int
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    scores: Score | None = None  # every score of the caption; None when not scored
    decoder: str = ""  # shared.core.decoding.Decoder: which decoder wrote the caption

    @property
    def score_original(self) -> float | None:
        return self.scores.original if self.scores else None

    @property
    def score_sentence_chunks(self) -> float | None:
        return self.scores.sentence_chunks if self.scores else None

    @property
    def slices(self) -> int:
        return self.scores.slices if self.scores else 0


@dataclass(frozen=True)
class Streamed:
    """One image's row as a streaming decoder ended it: its new ids, and the seconds from
    its prefill to its end."""

    item: Prepared
    ids: list[int]
    caption_s: float


def _finish(caption: Caption, item: Prepared, options: CaptionOptions) -> Caption:
    """Cleanup (before scoring, so the score is of the caption kept) and pixel boxes."""
    text, entities = clean_caption(
        caption.text,
        caption.entities,
        openings=options.strip_openings,
        collapse_whitespace=options.collapse_whitespace,
        trim_partial=options.trim_partial,
        truncated=caption.truncated,
    )
    entities = with_pixel_boxes(entities, width=item.width, height=item.height)
    return Caption(text=text, entities=entities, truncated=caption.truncated)


def _image_processor(model: object) -> object:
    """A model's image processor, for presize; None where a family has none to show."""
    return getattr(getattr(model, "processor", None), "image_processor", None)


class Engine:
    """The models of one worker process and the batch pipeline over them."""

    def __init__(
        self,
        captioner: CaptionAdapter,
        load_scorer: Callable[[], ScorerAdapter],
        *,
        max_pixels: int,
        max_aspect_ratio: float = 0.0,
        pixel_budget: int | None = None,
        fast_decode: bool = False,
        fast_short_side: int = FAST_DECODE_SHORT_SIDE,
        scorer: ScorerAdapter | None = None,
    ) -> None:
        self.captioner = captioner
        self.max_pixels = max_pixels
        self.max_aspect_ratio = max_aspect_ratio
        self.fast_decode = fast_decode
        self.fast_short_side = fast_short_side  # another value only to compare (bench_host)
        # By default one image of the largest size allowed is prepared at a time, or many
        # smaller ones side by side.
        self.pixels = PixelBudget(pixel_budget or max_pixels)
        self._load_scorer = load_scorer
        self._scorer = scorer
        self._scorer_lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, *, eager_scorer: bool) -> Engine:
        """Load the captioner now; CLIP now too when scoring is known to be wanted.

        A GPU host does not know whether its jobs want scores (that is the storage host's
        clip-failed setting), so otherwise CLIP loads on the first job that asks for it.
        """
        import transformers  # noqa: F401  (its lazy import is not model loading time)

        adopt_library_logs()
        models = [(settings.caption_model, "--caption-model", "caption model")]
        if eager_scorer:
            models.append((settings.clip_model, "--clip-model", "CLIP model"))
        require_models(models)  # every model that cannot be had, named in one error
        device = pick_device()
        dtype = pick_dtype(settings.dtype, device)
        started = time.perf_counter()
        captioner = load_for_settings(settings, device=device, dtype=dtype)  # by the checkpoint's family

        def load_scorer() -> ScorerAdapter:
            return load_family_scorer(settings.clip_model, device=device, dtype=dtype)  # by its family

        engine = cls(
            captioner,
            load_scorer,
            max_pixels=settings.max_pixels,
            max_aspect_ratio=settings.max_aspect_ratio,
            pixel_budget=settings.pixel_budget,
            fast_decode=settings.fast_decode,
        )
        if eager_scorer:
            engine.scorer()
        log.info(
            "models loaded on %s as %s in %.1fs (caption=%s clip=%s)",
            device,
            dtype,
            time.perf_counter() - started,
            settings.caption_model,
            settings.clip_model if eager_scorer else "on first scored job",
        )
        return engine

    def scorer(self) -> ScorerAdapter:
        if self._scorer is None:
            with self._scorer_lock:
                if self._scorer is None:
                    self._scorer = self._load_scorer()
        return self._scorer

    @property
    def scorer_source(self) -> str:
        return self._scorer.source if self._scorer is not None else ""

    # -- CPU side ------------------------------------------------------------
    def prepare(self, job: Job, image_bytes: bytes | None = None) -> Prepared:
        """Decode and preprocess; raises BadImageError for an unusable image.

        image_bytes: the job's image when it was stored beside the message (else inline)."""
        started = time.perf_counter()
        data = image_bytes if image_bytes is not None else job.image_bytes()
        opened = open_image(data, max_pixels=self.max_pixels, max_aspect_ratio=self.max_aspect_ratio)
        pixels = opened.width * opened.height
        # The record's size and pixel boxes are of the upright original, however it decodes.
        width, height = upright_size(opened)
        if self.fast_decode:
            draft_to_short_side(opened, self.fast_short_side)
        with self.pixels.hold(pixels):
            image = load_image(opened)
            if self.fast_decode:  # what DCT scaling could not do (PNG, WebP, a 1/8 still large)
                image = reduce_to_short_side(image, self.fast_short_side)
            processors = [_image_processor(self.captioner)]
            if job.options.score:
                processors.append(_image_processor(self.scorer()))
            # Each processor's resize done once, up front: bit-identical pixel values.
            shrunk = presize(image, processors)
            caption_pixels = self.captioner.preprocess(shrunk[0])
            clip_pixels = self.scorer().preprocess(shrunk[1]) if job.options.score else None
            del shrunk, opened, image  # the full-size pixels go before the trim below
        if pixels >= TRIM_AFTER_PIXELS:
            release_freed_memory()
        return Prepared(
            job_id=job.job_id,
            caption_pixels=caption_pixels,
            clip_pixels=clip_pixels,
            width=width,
            height=height,
            decode_s=time.perf_counter() - started,
        )

    # -- device side ---------------------------------------------------------
    def run_batch(self, options: CaptionOptions, items: list[Prepared]) -> list[Captioned]:
        """Caption then score a batch (options hold its one prompt); on out-of-memory, split it
        in half and retry the halves."""
        try:
            return self._run(options, items)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            ids = ",".join(item.job_id for item in items)
            if len(items) == 1:
                log.error("out of memory on a single image (job %s); giving up on this batch", ids)
                raise
            log.warning("out of memory on a batch of %d (jobs %s); splitting in half", len(items), ids)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            middle = len(items) // 2
            return self.run_batch(options, items[:middle]) + self.run_batch(options, items[middle:])

    def _run(self, options: CaptionOptions, items: list[Prepared]) -> list[Captioned]:
        started = time.perf_counter()
        # Kosmos-2 picks its own static decoder where it applies; the others use generate.
        new_ids, decoder = self.captioner.caption_ids(
            [item.caption_pixels for item in items], prompt=options.prompt, **options.generate_kwargs()
        )
        caption_s = time.perf_counter() - started
        return self.finish(options, items, new_ids, decoder, caption_s=[caption_s] * len(items))

    @property
    def can_stream(self) -> bool:
        """Whether greedy jobs stream through kcap's static decoder: the worker then feeds a
        DecodeStream (which runs the other jobs as batches) instead of a Batcher. Decided
        on the model and --decoder, not on this host's decoding options: jobs carry theirs."""
        return isinstance(self.captioner, Captioner) and self.captioner.decoder_for() is Decoder.KCAP_STATIC

    def streams(self, options: CaptionOptions) -> bool:
        """Whether jobs with these options stream through kcap's static decoder (decode_stream.py)."""
        if not isinstance(self.captioner, Captioner):
            return False
        decoder = self.captioner.decoder_for(
            num_beams=options.num_beams,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        return decoder is Decoder.KCAP_STATIC

    def static_decoder(self) -> Kosmos2Decoder:
        """kcap's static decoder over the caption model (Kosmos-2 only)."""
        return self._kosmos2().static_decoder

    def prompt_inputs(self, prompt: str) -> PromptInputs:
        return self._kosmos2().prompt_inputs(prompt)

    def _kosmos2(self) -> Captioner:
        """The caption model as Kosmos-2, the one family kcap's static decoder runs."""
        if not isinstance(self.captioner, Captioner):
            raise TypeError(f"{self.captioner.family} has no static decoder")
        return self.captioner

    def finish_streamed(self, options: CaptionOptions, rows: list[Streamed]) -> list[Captioned]:
        """finish() for the rows a streaming static decoder ended together."""
        decoder = self.static_decoder()
        return self.finish(
            options,
            [row.item for row in rows],
            pad_rows([row.ids for row in rows], pad_token_id=decoder.pad_token_id),
            Decoder.KCAP_STATIC,
            caption_s=[row.caption_s for row in rows],
        )

    def finish(
        self,
        options: CaptionOptions,
        items: list[Prepared],
        new_ids: Any,
        decoder: Decoder,
        *,
        caption_s: Sequence[float],
    ) -> list[Captioned]:
        """Postprocess, clean up and score captioned items: a whole batch, or the rows a
        streaming decoder finished at one step (scores are per row, so they are the same)."""
        captions = [
            _finish(caption, item, options)
            for caption, item in zip(
                self.captioner.postprocess(new_ids, max_new_tokens=options.max_new_tokens), items, strict=True
            )
        ]
        scores: list[Score | None] = [None] * len(items)
        score_s = 0.0
        if options.score:
            started = time.perf_counter()
            scores = list(self._score(items, [c.text for c in captions]))
            score_s = time.perf_counter() - started
        n = len(items)
        return [
            Captioned(
                text=caption.text,
                entities=caption.entities,
                truncated=caption.truncated,
                decoder=decoder.value,
                score=score.routing(options.route_score) if score else None,
                clipscore=score.clipscore if score else None,
                chunks=score.chunks if score else 0,
                scores=score,
                timings={
                    "decode_s": round(item.decode_s, 4),
                    "caption_batch_s": round(seconds, 4),
                    "score_batch_s": round(score_s, 4),
                    "batch_size": n,
                },
            )
            for item, caption, score, seconds in zip(items, captions, scores, caption_s, strict=True)
        ]

    def _score(self, items: list[Prepared], texts: list[str]) -> list[Score]:
        """Scores of captions against their images; on out-of-memory, in halves."""
        pixels = [item.clip_pixels for item in items]
        if any(p is None for p in pixels):
            raise RuntimeError("a scored batch holds an image prepared without CLIP pixels")
        try:
            return list(self.scorer().score([p for p in pixels if p is not None], texts))
        except Exception as exc:
            if not is_out_of_memory(exc) or len(items) == 1:
                raise
            log.warning("out of memory scoring %d captions; scoring them in halves", len(items))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            middle = len(items) // 2
            return self._score(items[:middle], texts[:middle]) + self._score(items[middle:], texts[middle:])
