"""What every scorer offers the engine.

``preprocess(image)`` runs on the CPU in the pool threads; ``score(items, captions)`` is
the one device step for a batch and returns every statistic of each caption (a Score);
``family`` names the scorer family the record and the router's threshold go by.
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from workers.captioning.scorers.clip import Score


class ScorerAdapter(Protocol):
    source: str
    family: str

    def preprocess(self, image: Image.Image) -> Any: ...

    def score(self, pixel_values: list[Any], captions: list[str]) -> list[Score]: ...
