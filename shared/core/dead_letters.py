"""The dead-letter list: messages that no worker can ever run, set aside with the reason.

A message lands here instead of crashing a worker or vanishing from a log: a body that is
not Celery's ``[args, kwargs, embed]`` or not JSON, a body that is not a job or a result, a
message over the size limit, a task nobody runs, a route message whose path is refused, and
a task that failed for good. `kcap status` shows how many there are and the newest reasons.

Each entry is one JSON object (see DeadLetter), newest first in the list
``kcap:<queue prefix>dead_letters``; the list keeps the newest MAX_KEPT, and
``kcap:<queue prefix>dead_letters:total`` counts every one ever set aside.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from shared.core.keys import Keys
from shared.core.records import json_text

log = logging.getLogger(__name__)

# Enough of a body to see what it was; a 200 MB body is not kept whole a second time.
MAX_BODY_CHARS = 4096
MAX_KEPT = 10_000


@dataclass(frozen=True)
class DeadLetter:
    """One message set aside. body is its first MAX_BODY_CHARS characters, as text when it
    was UTF-8 and as base64 otherwise (body_encoding says which). For a queue item that is
    not a kombu message (task and id None) it is the item itself, re-encoded when it was
    JSON; for a task that failed, its arguments as [args, kwargs, {}]."""

    time: float
    queue: str
    reason: str
    task: str | None  # the task name its headers gave, if any
    id: str | None  # the task id its headers gave, if any
    worker: str
    body: str
    body_bytes: int
    body_truncated: bool
    body_encoding: str  # "utf-8" or "base64"

    @classmethod
    def of(
        cls, body: bytes | str | None, *, queue: str, reason: str, task: Any, id: Any, worker: str
    ) -> DeadLetter:
        if isinstance(body, str):
            size = len(body) if body.isascii() else len(body.encode("utf-8", "surrogateescape"))
            head = body[:MAX_BODY_CHARS].encode("utf-8", "surrogateescape")
        else:
            size, head = len(body or b""), bytes((body or b"")[:MAX_BODY_CHARS])
        text, kept, encoding = _readable(head, whole=len(head) == size)
        return cls(
            time=time.time(),
            queue=queue,
            reason=reason,
            task=task if isinstance(task, str) else None,
            id=id if isinstance(id, str) else None,
            worker=worker,
            body=text,
            body_bytes=size,
            body_truncated=kept < size,
            body_encoding=encoding,
        )

    def encode(self) -> str:
        return json_text(asdict(self))


def _readable(head: bytes, *, whole: bool) -> tuple[str, int, str]:
    """The kept start of a body as (text, bytes kept, encoding): UTF-8 text when it is text
    (a character cut at the end is dropped), else base64 of at most MAX_BODY_CHARS chars."""
    try:
        return head.decode("utf-8"), len(head), "utf-8"
    except UnicodeDecodeError as exc:
        if not whole and exc.start >= len(head) - 3:
            try:
                return head[: exc.start].decode("utf-8"), exc.start, "utf-8"
            except UnicodeDecodeError:
                pass
    kept = head[: MAX_BODY_CHARS * 3 // 4]
    return base64.b64encode(kept).decode("ascii"), len(kept), "base64"


class DeadLetters:
    """The dead-letter list of one kcap instance."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._list = keys.dead_letters
        self._total = keys.dead_letters_total

    def add(self, letter: DeadLetter) -> None:
        """Set a message aside. Never raises: a worker must not die because Redis is away
        while it refuses a message (the message is then only in the log)."""
        log.error(
            "set aside a message from queue %r (task %s, id %s, %d bytes): %s",
            letter.queue,
            letter.task,
            letter.id,
            letter.body_bytes,
            letter.reason,
        )
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.lpush(self._list, letter.encode())
            pipe.ltrim(self._list, 0, MAX_KEPT - 1)
            pipe.incr(self._total)
            pipe.execute()
        except redis.RedisError as exc:
            log.error("could not write the dead letter for %s to Redis: %s", letter.id, exc)

    def total(self) -> int:
        return int(self._redis.get(self._total) or 0)

    def newest(self, n: int) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self._redis.lrange(self._list, 0, n - 1)]
