"""A redis-py client for any broker URL kcap takes, kombu's unix-socket form included."""

from __future__ import annotations

from typing import Any

import redis

# kombu (Celery, Flower) spells a unix socket redis+socket:///path; redis-py spells it unix://.
_KOMBU_SOCKET = "redis+socket://"


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for a broker URL: redis://, rediss:// or redis+socket://."""
    if url.startswith(_KOMBU_SOCKET):
        url = "unix://" + url.removeprefix(_KOMBU_SOCKET)
    return redis.Redis.from_url(url, **kwargs)
