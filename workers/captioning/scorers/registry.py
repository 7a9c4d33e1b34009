"""Which scorer scores with a checkpoint: CLIP, SigLIP or SigLIP 2, by its config's model_type.

Anything else fails the worker at start with the supported families.
"""

from __future__ import annotations

import logging

import torch

from shared.core.errors import ConfigError
from shared.core.scoring import ScorerFamily
from workers.captioning.loading import config_model_type
from workers.captioning.scorers.base import ScorerAdapter
from workers.captioning.scorers.clip import Scorer
from workers.captioning.scorers.siglip import SiglipScorer

log = logging.getLogger(__name__)

# model_type -> scorer family.
SCORER_MODEL_TYPES: dict[str, ScorerFamily] = {
    "clip": ScorerFamily.CLIP,
    "siglip": ScorerFamily.SIGLIP,
    "siglip2": ScorerFamily.SIGLIP2,
}


def load_scorer(source: str, *, device: torch.device, dtype: torch.dtype) -> ScorerAdapter:
    model_type = config_model_type(source, flag="--clip-model", what="CLIP model")
    family = SCORER_MODEL_TYPES.get(model_type)
    if family is None:
        supported = ", ".join(f"{f.value} ({t})" for t, f in SCORER_MODEL_TYPES.items())
        raise ConfigError(
            f"scorer {source} is a {model_type or 'model without a model_type'!r}, which kcap cannot "
            f"score with; pass --clip-model with one of these families (model_type): {supported}"
        )
    log.info("scorer %s: family %s", source, family.value)
    if family == ScorerFamily.CLIP:
        return Scorer(source, device=device, dtype=dtype)
    return SiglipScorer(source, family=family.value, device=device, dtype=dtype)
