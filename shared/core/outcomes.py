"""Where a routed image can end: the one vocabulary every side spells the same way."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The folder an image lands in. The values are folder roles, record fields and metric labels."""

    OUTPUT = "output"
    CLIP_FAILED = "clip_failed"
    ERRORS = "errors"


# In the order people read them: the dataset, the rejects, the unreadable.
OUTCOMES: tuple[Outcome, ...] = (Outcome.OUTPUT, Outcome.CLIP_FAILED, Outcome.ERRORS)
