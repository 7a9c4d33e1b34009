"""A cap on the pixels being decoded and preprocessed at once in one worker process.

Celery's pool threads prepare images in parallel. One 99 M-pixel photo costs gigabytes while
it is decoded and resized, so 32 threads taking such photos at once exhaust the host. Each
thread holds its image's pixels from this budget from decode to the end of preprocessing.
An image larger than the whole budget still runs, alone, so no image waits for ever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class PixelBudget:
    """Counts the pixels in flight; `hold` waits while taking more would pass the budget."""

    def __init__(self, budget_pixels: int) -> None:
        if budget_pixels < 1:
            raise ValueError(f"a pixel budget must be at least 1, not {budget_pixels}")
        self.budget_pixels = budget_pixels
        self._in_flight = 0
        self._room = threading.Condition()

    @property
    def in_flight(self) -> int:
        with self._room:
            return self._in_flight

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        charge = min(max(pixels, 0), self.budget_pixels)
        with self._room:
            self._room.wait_for(lambda: self._in_flight + charge <= self.budget_pixels)
            self._in_flight += charge
        try:
            yield
        finally:
            with self._room:
                self._in_flight -= charge
                self._room.notify_all()
