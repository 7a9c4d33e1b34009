"""Thresholds by scorer family: a threshold given for one family never routes another's scores.

Each family's score lives on its own scale (CLIP: logit scale x cosine, about 15..35 for
real captions; SigLIP: a probability in 0..1), so a number given with ``--threshold`` is
taken as meant for ``--threshold-family``: by default the family of ``--clip-model`` as the
storage host can tell (its config.json when the folder is here, else its name). A score of
any other family routes against that family's default threshold, and the router says so
once per family: at start when the two already differ, and on the first such result
(workers of one queue may run other scorers than the storage host was told).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from shared.core.outcomes import Outcome
from shared.core.scoring import ScorerFamily

if TYPE_CHECKING:
    from shared.core.messages import Result

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: Final[dict[str, float]] = {
    # The original script's threshold, set against its CLIP statistic: unchanged.
    ScorerFamily.CLIP.value: 15.0,
    # Provisional (not yet measured on real checkpoints, see docs/models.md, "Scorer families"): a sigmoid
    # score of 0.1 is logit -2.2, ten times likelier than the ~0.01 that unrelated pairs
    # get from SigLIP's learned bias; pick your own from the report's histogram.
    ScorerFamily.SIGLIP.value: 0.1,
    ScorerFamily.SIGLIP2.value: 0.1,
}


def scorer_family_of(source: str) -> str:
    """The scorer family of a checkpoint as far as the storage host can tell without the model
    stack: its config.json when the folder is here, else its hub id's name."""
    config = Path(source).expanduser() / "config.json"
    try:
        model_type = str(json.loads(config.read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        model_type = ""
    name = (model_type or source).lower()
    if "siglip2" in name:
        return ScorerFamily.SIGLIP2.value
    if "siglip" in name:
        return ScorerFamily.SIGLIP.value
    return ScorerFamily.CLIP.value


class Thresholds:
    """The threshold for each scorer family: the given one for its family, defaults elsewhere."""

    def __init__(self, given: float | None, *, given_for: str) -> None:
        self.given = given
        self.given_for = given_for
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def applied(self, result: Result, *, scoring: bool) -> float | None:
        """The threshold a result's score is compared with, for the route worker and the shard
        worker alike; None when nothing was scored (scoring off, or no score)."""
        if not scoring or result.score is None:
            return None
        return self.for_family(result.score_family)

    def for_family(self, family: str) -> float:
        family = family or ScorerFamily.CLIP.value
        if self.given is not None and family == self.given_for:
            return self.given
        default = DEFAULT_THRESHOLDS.get(family, DEFAULT_THRESHOLDS[ScorerFamily.CLIP.value])
        if self.given is not None:
            self.warn_once(family, default)
        return default

    def warn_once(self, family: str, default: float) -> None:
        with self._lock:
            if family in self._warned:
                return
            self._warned.add(family)
        log.warning(
            "--threshold %g was given for %s scores; %s scores route against %s's default threshold %g "
            "instead (pass --threshold-family %s --threshold N to set theirs)",
            self.given,
            self.given_for,
            family,
            family,
            default,
            family,
        )

    def check_start(self, clip_model: str) -> None:
        """At start: warn now if the configured scorer is of another family than the threshold."""
        family = scorer_family_of(clip_model)
        if self.given is not None and family != self.given_for:
            self.warn_once(family, DEFAULT_THRESHOLDS[family])


def outcome_for(*, ok: bool, score: float | None, threshold: float | None) -> Outcome:
    """The one threshold rule, for the route worker and the shard worker alike: a failed
    result is an error; an unscored one (no threshold, or no score) is output; a score under
    the threshold is clip-failed."""
    if not ok:
        return Outcome.ERRORS
    if threshold is None or score is None:
        return Outcome.OUTPUT
    return Outcome.OUTPUT if score >= threshold else Outcome.CLIP_FAILED
