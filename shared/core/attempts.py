"""Counting the starts of a job that never finished: how many times its worker died on it.

A worker killed while it holds a job (OOM kill, segfault) loses nothing: Redis hands the job
out again. If the job is what kills it, that would go on for ever. So each start of a job is
counted in Redis before any work (INCR with a TTL), and every way an attempt can end in the
worker clears it; only a start that never ended leaves its count behind. At the start after
the Nth death the job is given up on (sent to errors) without being worked on again.

A job held beside the one that killed the worker counts that death too; it goes to errors
only if it sat beside the killer N times, and a resend (`kcap` never deletes the input)
captions it again.
"""

from __future__ import annotations

import logging

import redis

from shared.core.keys import Keys

log = logging.getLogger(__name__)

# Long enough to span N visibility timeouts and the producer's stale-claim resend; a count
# left by a job that was then done another way expires on its own.
TTL_S = 24 * 3600


class Attempts:
    """Per-job start counts for one queue of one kcap instance."""

    def __init__(self, client: redis.Redis, keys: Keys, queue: str) -> None:
        self._redis = client
        self._keys = keys
        self._queue = queue

    def start(self, job_id: str) -> int:
        """Count a start; returns how many earlier starts of this job never ended (deaths).
        Redis being away is not a reason to refuse work: then it says 0."""
        key = self._keys.attempts(self._queue, job_id)
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, TTL_S)
            started, _ = pipe.execute()
        except redis.RedisError as exc:
            log.warning("job %s: cannot count its start (%s); going on", job_id, exc)
            return 0
        return int(started) - 1

    def end(self, job_id: str) -> None:
        """The attempt ended in the worker (done, retried or given up): not a death."""
        key = self._keys.attempts(self._queue, job_id)
        try:
            self._redis.delete(key)
        except redis.RedisError as exc:
            # Harmless: the next start counts one death too many, the TTL clears it.
            log.warning("job %s: cannot clear its start count (%s)", job_id, exc)
