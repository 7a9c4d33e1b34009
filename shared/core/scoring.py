"""Which CLIP score routes an image: one vocabulary for settings, jobs, records and workers."""

from __future__ import annotations

from enum import StrEnum

# The original script cut the caption every 77 *characters* (CLIP's window is 77 tokens).
ORIGINAL_SLICE_CHARS = 77


class ScoreMethod(StrEnum):
    """How a caption's CLIP score is computed; the threshold is compared with the chosen one."""

    # The original script's statistic, computed its way (the default: its threshold of 15
    # was set against this number): the caption as written, cut into 77-character slices,
    # each slice's logits_per_image (the model's own logit scale x cosine), averaged.
    ORIGINAL = "original"
    # kcap's: whole sentences packed into chunks that fit CLIP's 77-token window, and
    # 100 x the chunks' mean cosine. No slice cuts a word in two, so long captions score
    # on what they say.
    SENTENCE_CHUNKS = "sentence-chunks"


SCORE_METHODS: tuple[str, ...] = tuple(method.value for method in ScoreMethod)


class Statistic(StrEnum):
    """What a record's routing score is: a ScoreMethod's, or a sigmoid family's own."""

    ORIGINAL = ScoreMethod.ORIGINAL.value
    SENTENCE_CHUNKS = ScoreMethod.SENTENCE_CHUNKS.value
    # SigLIP / SigLIP 2: sigmoid(logit_scale x cosine + logit_bias) per sentence chunk (a
    # match probability the model was trained to give), averaged over the chunks.
    SIGMOID = "sigmoid"


class ScorerFamily(StrEnum):
    """The scorer families `--clip-model` takes, by the checkpoint's model_type."""

    CLIP = "clip"
    SIGLIP = "siglip"
    SIGLIP2 = "siglip2"


SCORER_FAMILIES: tuple[str, ...] = tuple(family.value for family in ScorerFamily)
