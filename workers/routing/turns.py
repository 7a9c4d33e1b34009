"""Whose death it was, when the route worker dies with many results in progress.

The route worker files a batch's results side by side (16 threads), so when it dies, every
result in progress was beside whatever killed it, if a result did at all (the kill may be an
OOM kill or a restart of the host). Such a death is nobody's: it only makes each of those
results a suspect. A suspect is filed alone (results not yet begun wait for it), so a death
while it is filed is its own, and a result is given up on after --max-worker-deaths deaths
of its own: a true killer costs one more death than that, a bystander is never blamed. A
result still waiting for a filing thread, or for its turn, has begun nothing and is not
counted at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.core.attempts import Attempts, Deaths

log = logging.getLogger(__name__)


class Turns:
    """Filings side by side, or one alone: a readers-writer lock in which a waiting lone
    filing goes first, so a steady stream of batches cannot keep a suspect waiting."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._side_by_side = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def side_by_side(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._side_by_side += 1
        try:
            yield
        finally:
            with self._changed:
                self._side_by_side -= 1
                self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._waiting_alone += 1
            self._changed.wait_for(lambda: not self._alone and not self._side_by_side)
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()


class FilingTurns:
    """Each filing of a result in this process: its turn, and its start record."""

    def __init__(self, attempts: Attempts) -> None:
        self._attempts = attempts
        self._turns = Turns()

    @contextmanager
    def filing(self, job_id: str) -> Iterator[Deaths]:
        """Hold the turn to file one result; yields the deaths on it so far, of which only
        `alone` are its own. The start is recorded once the turn is taken (its writes begin),
        and ends with the block."""
        earlier = self._attempts.deaths(job_id)
        suspect = earlier.total > 0
        if suspect:
            log.warning(
                "job %s: the route worker died while filing it (%d time(s) alone, %d beside others); "
                "filing it alone",
                job_id,
                earlier.alone,
                earlier.beside,
            )
        turn = self._turns.alone() if suspect else self._turns.side_by_side()
        with turn, self._attempts.attempt(job_id, alone=suspect) as deaths:
            yield deaths
