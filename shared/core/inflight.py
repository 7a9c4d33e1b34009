"""Jobs in flight, kept in Redis so the cap and the dedupe survive a producer restart.

A sorted set maps job id -> time enqueued, a hash job id -> the input's relative path, and
another job id -> the input's size (the cap on bytes in flight).
The producer adds a job before publishing it and waits while the set is full; the route task
removes it once the image is placed. A claim that stays far too long marks a lost job: its
path tells the producer which file to send again.
Counters by outcome back `kcap status` and the live progress display.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from shared.core.broker import redis_client
from shared.core.outcomes import OUTCOMES, Outcome
from shared.core.settings import Settings

# The window of `kcap status`'s images/s figure, and of the live display's: recent enough to
# follow a change of pace, long enough to be steady; older completions are dropped.
RATE_WINDOW_S = 60.0
LIVE_RATE_WINDOW_S = 10.0
# Completions this close to the first one in a window came out of the same batch.
SAME_BATCH_S = 0.1
_KEEP_DONE_TIMES_S = 600.0


def eta_s(in_flight: int, rate: float) -> float | None:
    """Seconds until what is in flight is routed at the current rate; None: no rate yet."""
    if not in_flight:
        return 0.0
    return round(in_flight / rate, 1) if rate > 0 else None


@dataclass(frozen=True)
class Snapshot:
    """Where a run stands: what `kcap status` prints and the live display shows."""

    counts: dict[Outcome, int]
    in_flight: int
    images_per_s: float  # lately: see InFlight.rate

    @property
    def routed(self) -> int:
        return sum(self.counts.values())

    @property
    def eta_s(self) -> float | None:
        return eta_s(self.in_flight, self.images_per_s)


class InFlight:
    """The in-flight set and the outcome counters of one kcap instance."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        # The client must decode responses (InFlight.connect makes one that does).
        self._redis = client
        keys = self._keys = settings.keys
        self._key = keys.inflight
        self._paths = keys.inflight_paths
        self._bytes = keys.inflight_bytes
        self._counts = keys.counts
        self._done_times = keys.done_times

    @classmethod
    def connect(cls, settings: Settings) -> InFlight:
        # surrogateescape: a path that is not UTF-8 (PEP 383) is kept as its very bytes.
        client = redis_client(
            settings.require_broker(), decode_responses=True, encoding_errors="surrogateescape"
        )
        return cls(client, settings)

    def try_add(self, job_id: str, rel_path: str, *, size: int = 0) -> bool:
        """Claim a job; False when it is already in flight (a duplicate event or a restart)."""
        pipe = self._redis.pipeline()
        pipe.zadd(self._key, {job_id: time.time()}, nx=True)
        pipe.hset(self._paths, job_id, rel_path)  # a job id is made from its path: never two
        pipe.hset(self._bytes, job_id, size)
        added, _, _ = pipe.execute()
        return bool(added)

    def discard(self, job_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.zrem(self._key, job_id)
        pipe.delete(self._keys.blob(job_id))  # a large job's image bytes (shared.core.blobs)
        pipe.hdel(self._paths, job_id)
        pipe.hdel(self._bytes, job_id)
        pipe.execute()

    def usage(self) -> tuple[int, int]:
        """(jobs, input bytes) in flight, in one round trip: what the two caps compare."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self._key)
        pipe.hgetall(self._bytes)
        jobs, sizes = pipe.execute()
        return int(jobs), sum(int(size) for size in sizes.values())

    def bytes_in_flight(self) -> int:
        """The input bytes of the jobs in flight (a job's message carries its image)."""
        return self.usage()[1]

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

    def stale(self, older_than_s: float, *, limit: int = 64) -> list[tuple[str, str | None]]:
        """(job id, relative path) of the oldest claims made more than older_than_s ago.

        The path is None for a claim that has none (made by an older kcap).
        """
        cutoff = time.time() - older_than_s
        job_ids = [str(j) for j in self._redis.zrangebyscore(self._key, "-inf", cutoff, start=0, num=limit)]
        if not job_ids:
            return []
        paths = self._redis.hmget(self._paths, job_ids)
        return [
            (job_id, None if path is None else str(path)) for job_id, path in zip(job_ids, paths, strict=True)
        ]

    def record_outcome(self, job_id: str, outcome: Outcome) -> None:
        """Count a routed job and free its slot, in one round trip."""
        now = time.time()
        pipe = self._redis.pipeline()
        pipe.zrem(self._key, job_id)
        pipe.hdel(self._paths, job_id)
        pipe.hdel(self._bytes, job_id)
        pipe.delete(self._keys.blob(job_id))
        pipe.hincrby(self._counts, outcome.value, 1)
        pipe.zadd(self._done_times, {f"{job_id}:{now}": now})
        pipe.zremrangebyscore(self._done_times, 0, now - _KEEP_DONE_TIMES_S)
        pipe.execute()

    def counts(self) -> dict[Outcome, int]:
        raw = self._redis.hgetall(self._counts)
        found = {str(k): int(v) for k, v in raw.items()}
        return {outcome: found.get(outcome.value, 0) for outcome in OUTCOMES}

    def rate(self, window_s: float = RATE_WINDOW_S) -> float:
        """Images routed per second lately: those routed in the last window_s after its first
        batch, over the time since that batch.

        The clock starts at the window's first completions, never before: the time before
        them (models loading, an idle folder) is not work, and dividing by it made a run's
        first images read as slow. Their own batch only starts the clock: when its work began
        is unknown. In a steady run this is the count over the window; while only one batch
        is in the window, the count over the window says at least that much.
        """
        now = time.time()
        since = now - window_s
        first = self._redis.zrangebyscore(self._done_times, since, now, start=0, num=1, withscores=True)
        if not first:
            return 0.0
        started = float(first[0][1])
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcount(self._done_times, f"({started + SAME_BATCH_S}", now)
        pipe.zcount(self._done_times, since, now)
        after, count = (int(n) for n in pipe.execute())
        return after / (now - started) if after else count / window_s

    def snapshot(self, *, window_s: float = RATE_WINDOW_S) -> Snapshot:
        """Counts, jobs in flight and the rate over the last window_s."""
        return Snapshot(counts=self.counts(), in_flight=self.size(), images_per_s=self.rate(window_s))
