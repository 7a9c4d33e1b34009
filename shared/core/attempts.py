"""Counting the starts of a job that never finished: how many times its worker died on it.

A worker killed while it holds a job (OOM kill, segfault) loses nothing: Redis hands the job
out again. If the job is what kills it, that would go on for ever. So each start of a job is
recorded in Redis before any work (one field of a hash with a TTL), and every way an attempt
can end in the worker clears it; only a start that never ended leaves its field behind. At
the start after the Nth death the job is given up on (sent to errors) without being worked
on again.

Each field names the process that made it, so two threads of one live process working on
the same job (the same job delivered twice, or twice in one batch) are not each other's
deaths: a field left under another process's mark is one. Each also says whether the job
was the only one its worker was on (`alone`) or one of several (`beside`): when a worker
that files many results at once dies, only a death while a job was alone is surely its own
(workers.routing.turns). A caption worker counts both kinds.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared.core.keys import Keys

log = logging.getLogger(__name__)

# Long enough to span N visibility timeouts and the producer's stale-claim resend; a count
# left by a job that was then done another way expires on its own.
TTL_S = 24 * 3600
ALONE, BESIDE = "alone", "beside"


@dataclass(frozen=True)
class Deaths:
    """Earlier starts of a job that never ended: its worker died while on it."""

    alone: int = 0  # the job was all its worker was on: the death was surely its own
    beside: int = 0  # other jobs were in progress beside it: any of them may have been the cause

    @property
    def total(self) -> int:
        return self.alone + self.beside


@dataclass(frozen=True)
class Attempt:
    """One start of a job, as recorded; end it with Attempts.end."""

    job_id: str
    field: str
    deaths: Deaths  # the deaths before this start


class Attempts:
    """Per-job start records for one queue of one kcap instance, made by this process."""

    def __init__(self, client: redis.Redis, keys: Keys, queue: str) -> None:
        self._redis = client
        self._keys = keys
        self._queue = queue
        # Unique to this process (a restarted worker may get the same pid back).
        self._mark = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}/"
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._live: Counter[str] = Counter()  # this process's attempts in progress, per job

    def deaths(self, job_id: str) -> Deaths:
        """The deaths on this job so far, without starting it. Redis away: none."""
        try:
            fields = self._redis.hgetall(self._keys.attempts(self._queue, job_id))
        except redis.RedisError as exc:
            log.warning("job %s: cannot read its start records (%s); going on", job_id, exc)
            return Deaths()
        return self._deaths_in(fields)

    def start(self, job_id: str, *, alone: bool = False) -> Attempt:
        """Record a start; its deaths are the earlier starts of other processes that never
        ended. Redis being away is not a reason to refuse work: then it says none."""
        key = self._keys.attempts(self._queue, job_id)
        field = f"{self._mark}{next(self._numbers)}"
        with self._lock:
            self._live[job_id] += 1
        try:
            pipe = self._redis.pipeline()  # MULTI: the fields read are those before this one
            pipe.hgetall(key)
            pipe.hset(key, field, ALONE if alone else BESIDE)
            pipe.expire(key, TTL_S)
            earlier, _, _ = pipe.execute()
        except redis.RedisError as exc:
            log.warning("job %s: cannot record its start (%s); going on", job_id, exc)
            return Attempt(job_id, field, Deaths())
        return Attempt(job_id, field, self._deaths_in(earlier))

    def end(self, attempt: Attempt) -> None:
        """The attempt ended in the worker (done, retried or given up): not a death. The job's
        earlier deaths are forgotten with it, unless another thread here is still on it."""
        job_id = attempt.job_id
        with self._lock:
            self._live[job_id] -= 1
            others = self._live[job_id]
            if not others:
                del self._live[job_id]
        key = self._keys.attempts(self._queue, job_id)
        try:
            if others:
                self._redis.hdel(key, attempt.field)
            else:
                self._redis.delete(key)
        except redis.RedisError as exc:
            # Harmless: the next start counts one death too many, the TTL clears it.
            log.warning("job %s: cannot clear its start record (%s)", job_id, exc)

    @contextmanager
    def attempt(self, job_id: str, *, alone: bool = False) -> Iterator[Deaths]:
        """Start the job, yield its deaths so far, and end the attempt however the block ends."""
        started = self.start(job_id, alone=alone)
        try:
            yield started.deaths
        finally:
            self.end(started)

    def _deaths_in(self, fields: Mapping[bytes | str, bytes | str]) -> Deaths:
        alone = beside = 0
        for name, kind in fields.items():
            if _text(name).startswith(self._mark):
                continue  # a thread of this process, at work now
            if _text(kind) == ALONE:
                alone += 1
            else:
                beside += 1
        return Deaths(alone=alone, beside=beside)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
