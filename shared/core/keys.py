"""Every Redis key name kcap reads or writes, in one place (arq's constants.py idea).

kcap's own keys live under ``kcap:<queue prefix>``, so several kcap instances can share one
Redis. kombu's keys are its own layout, read by `kcap status`; they are named here so that a
kombu upgrade that moves them has one place to change.
"""

from __future__ import annotations

from dataclasses import dataclass

# kombu's Redis transport: a message with priority p > 0 waits in "<queue>\x06\x16<p>", and
# every delivered-but-unacknowledged message is a [payload, exchange, routing key] entry of
# the "unacked" hash, whatever the queue.
KOMBU_UNACKED = "unacked"
# Sorted set: delivery tag -> when it was delivered; kombu restores the entries older than the
# visibility timeout to their queues.
KOMBU_UNACKED_INDEX = "unacked_index"
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


def kombu_queue_lists(queue: str) -> list[str]:
    """The lists that hold a queue's waiting messages, one per priority step."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{step}" for step in KOMBU_PRIORITY_STEPS)]


@dataclass(frozen=True)
class Keys:
    """kcap's own keys for one instance (one queue prefix)."""

    prefix: str  # "kcap:" + the queue prefix

    @property
    def inflight(self) -> str:
        """Sorted set: job id -> time claimed by the producer; freed when routed."""
        return f"{self.prefix}inflight"

    @property
    def inflight_paths(self) -> str:
        """Hash: job id -> its input's relative path, so a lost job can be sent again."""
        return f"{self.prefix}inflight_paths"

    @property
    def inflight_bytes(self) -> str:
        """Hash: job id -> its input's size in bytes, for the cap on bytes in flight."""
        return f"{self.prefix}inflight_bytes"

    @property
    def counts(self) -> str:
        """Hash: outcome -> images routed there."""
        return f"{self.prefix}counts"

    @property
    def done_times(self) -> str:
        """Sorted set of recent completions, for images/s over the last minutes."""
        return f"{self.prefix}done_times"

    @property
    def dead_letters(self) -> str:
        """List, newest first: messages set aside, one JSON object each (shared.core.dead_letters)."""
        return f"{self.prefix}dead_letters"

    @property
    def dead_letters_total(self) -> str:
        """Counter: every message ever set aside (the list keeps only the newest)."""
        return f"{self.prefix}dead_letters:total"

    def blob(self, job_id: str) -> str:
        """String with a TTL: a large job's image bytes, raw (shared.core.blobs)."""
        return f"{self.prefix}blob:{job_id}"

    @property
    def shards(self) -> str:
        """Hash: shard job id -> its state as JSON (shared.core.shard_board)."""
        return f"{self.prefix}shards"

    @property
    def shard_samples(self) -> str:
        """Hash: outcome -> shard samples filed there."""
        return f"{self.prefix}shard_samples"

    @property
    def shard_done_times(self) -> str:
        """Sorted set of "<job>:<n>:<time>" progress steps of shard jobs, for samples/s."""
        return f"{self.prefix}shard_done_times"

    def shard_lease(self, job_id: str) -> str:
        """String with a TTL: the worker working on a shard job, renewed while it works."""
        return f"{self.prefix}shard_lease:{job_id}"

    def attempts(self, queue: str, job_id: str) -> str:
        """Hash with a TTL: starts of a job on a queue that never ended (shared.core.attempts)."""
        return f"{self.prefix}attempts:{queue}:{job_id}"


def keys_for(queue_prefix: str) -> Keys:
    return Keys(prefix=f"kcap:{queue_prefix}")
