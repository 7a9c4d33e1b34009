"""Jobs in flight, kept in Redis so the cap and the dedupe survive a producer restart.

A sorted set maps job id -> time enqueued. The producer adds a job before publishing it and
waits while the set is full; the route task removes it once the image is placed.
Counters by outcome back `kcap status` and the progress bar.
"""

from __future__ import annotations

import time

import redis

from shared.settings import Settings

OUTCOMES = ("output", "clip_failed", "errors")


class InFlight:
    """The in-flight set and the outcome counters of one kcap instance."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        # The client must decode responses (InFlight.connect makes one that does).
        self._redis = client
        self._key = f"{settings.key_prefix}inflight"
        self._counts = f"{settings.key_prefix}counts"
        self._done_times = f"{settings.key_prefix}done_times"

    @classmethod
    def connect(cls, settings: Settings) -> InFlight:
        assert settings.broker_url, "the broker URL is set before InFlight is used"
        return cls(redis.Redis.from_url(settings.broker_url, decode_responses=True), settings)

    def try_add(self, job_id: str) -> bool:
        """Claim a job; False when it is already in flight (a duplicate event or a restart)."""
        return bool(self._redis.zadd(self._key, {job_id: time.time()}, nx=True))

    def discard(self, job_id: str) -> None:
        self._redis.zrem(self._key, job_id)

    def contains(self, job_id: str) -> bool:
        return self._redis.zscore(self._key, job_id) is not None

    def age(self, job_id: str) -> float | None:
        """Seconds since the job was claimed, or None when it is not in flight."""
        claimed = self._redis.zscore(self._key, job_id)
        return None if claimed is None else time.time() - float(claimed)

    def refresh(self, job_id: str) -> None:
        self._redis.zadd(self._key, {job_id: time.time()}, xx=True)

    def size(self) -> int:
        return int(self._redis.zcard(self._key))

    def record_outcome(self, job_id: str, outcome: str) -> None:
        """Count a routed job and free its slot, in one round trip."""
        now = time.time()
        pipe = self._redis.pipeline()
        pipe.zrem(self._key, job_id)
        pipe.hincrby(self._counts, outcome, 1)
        pipe.zadd(self._done_times, {f"{job_id}:{now}": now})
        # Only the last ten minutes of completions are kept, for the images/s figure.
        pipe.zremrangebyscore(self._done_times, 0, now - 600)
        pipe.execute()

    def counts(self) -> dict[str, int]:
        raw = self._redis.hgetall(self._counts)
        found = {str(k): int(v) for k, v in raw.items()}
        return {outcome: found.get(outcome, 0) for outcome in OUTCOMES}

    def rate(self, window_s: float = 60.0) -> float:
        """Images routed per second over the last window_s."""
        now = time.time()
        return int(self._redis.zcount(self._done_times, now - window_s, now)) / window_s
