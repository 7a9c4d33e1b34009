"""Where dataset mode's shard jobs stand, kept in Redis: `kcap run --input-shards` waits on it,
`kcap status` and the live display count it, and the worker that holds a shard job leases it.

One hash entry per shard job (its state, chunk name, worker and per-outcome sample counts,
as JSON) is the truth: a shard taken again after a killed worker starts its counts from
zero, so no sample is counted twice. Workers write it every PROGRESS_EVERY samples or
PROGRESS_EVERY_S seconds, not per sample: Redis carries a few bytes per sample.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from shared.core.broker import redis_client
from shared.core.keys import KOMBU_UNACKED, KOMBU_UNACKED_INDEX, Keys
from shared.core.outcomes import OUTCOMES, Outcome
from shared.core.settings import Settings

RATE_WINDOW_S = 60.0
_KEEP_DONE_TIMES_S = 600.0
PROGRESS_EVERY = 256
PROGRESS_EVERY_S = 2.0


class ShardState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED = frozenset({ShardState.DONE, ShardState.FAILED})


@dataclass(frozen=True)
class ShardEntry:
    """One shard job's line on the board."""

    state: ShardState
    chunk: str
    expected: int | None = None  # samples, when the planner could count them cheaply
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> samples filed
    worker: str = ""
    reason: str = ""

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    def encode(self) -> str:
        data: dict[str, Any] = {"state": self.state.value, "chunk": self.chunk, "expected": self.expected}
        data.update(counts=self.counts, worker=self.worker, reason=self.reason)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> ShardEntry:
        data = json.loads(raw)
        return cls(
            state=ShardState(data["state"]),
            chunk=str(data["chunk"]),
            expected=data.get("expected"),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            worker=str(data.get("worker", "")),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class ShardSnapshot:
    """Shards by state, samples by outcome, samples/s over the last minute, and an ETA."""

    shards: dict[ShardState, int]
    samples: dict[Outcome, int]
    samples_per_s: float
    remaining_samples: int | None  # None: unknown (tar shards not yet started and none done)

    @property
    def total_shards(self) -> int:
        return sum(self.shards.values())

    @property
    def eta_s(self) -> float | None:
        if self.remaining_samples is None:
            return None
        if not self.remaining_samples:
            return 0.0
        return round(self.remaining_samples / self.samples_per_s, 1) if self.samples_per_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shards": {state.value: n for state, n in self.shards.items()},
            "samples": {outcome.value: n for outcome, n in self.samples.items()},
            "samples_per_s": round(self.samples_per_s, 3),
            "remaining_samples": self.remaining_samples,
            "eta_s": self.eta_s,
        }


def snapshot_of(entries: list[ShardEntry], samples_per_s: float) -> ShardSnapshot:
    shards = {state: 0 for state in ShardState}
    samples = {outcome: 0 for outcome in OUTCOMES}
    for entry in entries:
        shards[entry.state] += 1
        for outcome in OUTCOMES:
            samples[outcome] += entry.counts.get(outcome.value, 0)
    finished = [e for e in entries if e.state is ShardState.DONE]
    # A tar shard's size in samples is known once it is done: the mean stands in for the rest.
    mean = sum(e.samples for e in finished) / len(finished) if finished else None
    remaining: int | None = 0
    for entry in entries:
        if entry.state in FINISHED:
            continue
        size = entry.expected if entry.expected is not None else mean
        if size is None:
            remaining = None
            break
        remaining = (remaining or 0) + max(0, round(size) - entry.samples)
    return ShardSnapshot(shards, samples, samples_per_s, remaining)


class ShardBoard:
    """The shard jobs of one kcap instance, and their leases."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client  # decode_responses=True
        self._keys = keys

    @classmethod
    def connect(cls, settings: Settings) -> ShardBoard:
        return cls(redis_client(settings.require_broker(), decode_responses=True), settings.keys)

    def close(self) -> None:
        self._redis.close()

    # -- the planner -------------------------------------------------------
    def clear(self) -> None:
        """Forget every shard job (a new `kcap run`: the embedded Redis keeps its data)."""
        self._redis.delete(self._keys.shards, self._keys.shard_done_times)

    def plan(self, entries: dict[str, ShardEntry]) -> None:
        if entries:
            self._redis.hset(self._keys.shards, mapping={job_id: e.encode() for job_id, e in entries.items()})

    def entries(self) -> dict[str, ShardEntry]:
        raw = self._redis.hgetall(self._keys.shards)
        return {str(job_id): ShardEntry.decode(str(value)) for job_id, value in raw.items()}

    def entry(self, job_id: str) -> ShardEntry | None:
        raw = self._redis.hget(self._keys.shards, job_id)
        return None if raw is None else ShardEntry.decode(str(raw))

    def snapshot(self, *, window_s: float = RATE_WINDOW_S) -> ShardSnapshot:
        window_s = min(RATE_WINDOW_S, max(1.0, window_s))
        return snapshot_of(list(self.entries().values()), self.rate(window_s))

    def rate(self, window_s: float = RATE_WINDOW_S) -> float:
        """Samples filed per second over the last window_s."""
        now = time.time()
        steps = self._redis.zrangebyscore(self._keys.shard_done_times, now - window_s, now)
        return sum(int(str(step).split(":")[1]) for step in steps) / window_s

    # -- the worker --------------------------------------------------------
    def update(self, job_id: str, entry: ShardEntry, *, new_samples: int = 0) -> None:
        """Write a job's entry; new_samples (filed since the last update) feed the rate."""
        now = time.time()
        pipe = self._redis.pipeline()
        pipe.hset(self._keys.shards, job_id, entry.encode())
        if new_samples:
            pipe.zadd(self._keys.shard_done_times, {f"{job_id}:{new_samples}:{now}": now})
            pipe.zremrangebyscore(self._keys.shard_done_times, 0, now - _KEEP_DONE_TIMES_S)
        pipe.execute()

    def take_lease(self, job_id: str, worker: str, *, ttl_s: int) -> bool:
        """Hold the job's lease; False while another live worker holds it."""
        # Not even a worker's own: a second delivery to the same worker must wait like any.
        return bool(self._redis.set(self._keys.shard_lease(job_id), worker, nx=True, ex=ttl_s))

    def renew_lease(self, job_id: str, worker: str, *, ttl_s: int) -> None:
        key = self._keys.shard_lease(job_id)
        if self._redis.get(key) in (worker, None):
            self._redis.set(key, worker, ex=ttl_s)

    def release_lease(self, job_id: str, worker: str) -> None:
        key = self._keys.shard_lease(job_id)
        if self._redis.get(key) == worker:
            self._redis.delete(key)

    # -- kombu's visibility timeout ---------------------------------------
    def delivery_tag_of(self, task_id: str) -> str | None:
        """The delivery tag of the unacknowledged message that carries task_id, if any."""
        for tag, raw in self._redis.hscan_iter(KOMBU_UNACKED, count=500):
            try:
                payload = json.loads(raw)[0]
                if payload["headers"]["id"] == task_id:
                    return str(tag)
            except (ValueError, TypeError, KeyError, IndexError):
                continue
        return None

    def hold_message(self, delivery_tag: str) -> None:
        """Mark the message as delivered just now, so kombu's visibility timeout does not hand
        it to another worker while this one works on it: a shard job takes longer than the
        timeout. When the worker dies the marks stop and the timeout runs out as usual."""
        self._redis.zadd(KOMBU_UNACKED_INDEX, {delivery_tag: time.time()}, xx=True)
