"""Large images travel beside their job message, as raw bytes in a Redis string.

A job carries its image so that GPU hosts need no shared filesystem. Inline, a 12 MP photo
is base64 in JSON three times over on its way (Celery's body, kombu's base64 of that body,
and kombu's envelope, written again into its unacknowledged-message hash), and the worker
undoes it all. That costs more CPU than decoding the photo. So an image over
INLINE_MAX_BYTES is stored once, raw, under `kcap:<prefix>blob:<job id>`; the job message
says so (`image_stored`) and stays small. The route task deletes the blob when it frees the
job's claim (shared.core.inflight, in the same round trip); a TTL removes any that nothing
routed.

A worker that finds no blob for its job (already routed and deleted, or expired in a queue
that waited longer than the TTL) drops that delivery without a result: the producer's
stale-claim check sends a job that was never routed again, blob included.
"""

from __future__ import annotations

import redis

from shared.core.broker import redis_client
from shared.core.settings import Settings

# Small images stay inline: one message, no second round trip.
INLINE_MAX_BYTES = 64 * 1024
# A blob outlives any reasonable wait in the queue; after it, the stale-claim resend covers.
MIN_TTL_S = 3600


class Blobs:
    """Put, get and delete the image bytes of jobs in flight."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client  # must not decode responses: these are bytes
        self._keys = settings.keys
        self.ttl_s = max(MIN_TTL_S, int(2 * settings.stale_claim_s))

    @classmethod
    def connect(cls, settings: Settings) -> Blobs:
        return cls(redis_client(settings.require_broker()), settings)

    def put(self, job_id: str, data: bytes) -> None:
        self._redis.set(self._keys.blob(job_id), data, ex=self.ttl_s)

    def get(self, job_id: str) -> bytes | None:
        data = self._redis.get(self._keys.blob(job_id))
        return bytes(data) if data is not None else None  # type: ignore[arg-type]
