"""Whose death it was: a suspect is filed alone, and only a death while alone is its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import redis

from shared.core.attempts import Attempts, Deaths
from shared.core.broker import redis_client
from shared.core.keys import keys_for
from workers.routing.turns import FilingTurns, Turns


def test_a_lone_filing_waits_for_those_side_by_side_and_goes_before_new_ones() -> None:
    turns = Turns()
    events: list[str] = []
    first_in, release_first = threading.Event(), threading.Event()

    def side_by_side(name: str, hold: bool) -> None:
        with turns.side_by_side():
            events.append(f"{name} in")
            if hold:
                first_in.set()
                release_first.wait(10)
            events.append(f"{name} out")

    def alone() -> None:
        with turns.alone():
            events.append("alone in")
            events.append("alone out")

    threads = [threading.Thread(target=side_by_side, args=("a", True))]
    threads[0].start()
    assert first_in.wait(10)
    threads.append(threading.Thread(target=alone))
    threads[1].start()
    deadline = time.monotonic() + 10
    while not turns._waiting_alone:  # the lone filing is queued behind "a"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    threads.append(threading.Thread(target=side_by_side, args=("b", False)))
    threads[2].start()
    time.sleep(0.1)  # "b" would be in by now if it did not wait behind the lone filing
    assert events == ["a in"]
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert events == ["a in", "a out", "alone in", "alone out", "b in", "b out"]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis_client(redis_url)
    yield connection
    connection.close()


class Worker:
    """One route worker process's filing turns; kill() leaves its filings in progress for good."""

    def __init__(self, client: redis.Redis) -> None:
        self.turns = FilingTurns(Attempts(client, keys_for(""), "route"))
        self._killed: list[AbstractContextManager[Deaths]] = []

    def file(self, job_id: str) -> Deaths:
        """A filing that ends; the deaths on the job before it."""
        with self.turns.filing(job_id) as deaths:
            return deaths

    def die_filing(self, *job_ids: str) -> None:
        """These filings begin, side by side, and the process dies: none of them ends."""
        for job_id in job_ids:
            filing = self.turns.filing(job_id)
            filing.__enter__()
            self._killed.append(filing)  # kept, so nothing ends it


def test_only_a_death_while_filed_alone_counts_for_the_result(client: redis.Redis) -> None:
    # Each Worker is a process; the ones killed are kept, so nothing ends their filings.
    killed = [Worker(client) for _ in range(3)]
    killed[0].die_filing("killer", "bystander")  # side by side: nobody's own death
    first = killed[1]
    assert first.file("bystander") == Deaths(beside=1)  # a suspect, filed alone; it ends, cleared
    first.die_filing("killer")  # filed alone, and the worker dies again: its own death
    killed[2].die_filing("killer")
    last = Worker(client)
    assert last.file("killer") == Deaths(alone=2, beside=1)  # two of its own, one shared
    assert last.file("bystander") == Deaths()
    assert last.file("killer") == Deaths()  # its last filing ended: its deaths are forgotten
