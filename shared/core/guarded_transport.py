"""kombu's Redis transport, hardened against queue items that are not kombu messages.

A queue is a Redis list anyone with the password can LPUSH to. kombu pops an item, parses it
as its JSON envelope and builds a message from it in the worker's event loop; an item that
is not JSON, not UTF-8 or not an envelope (``null``, ``[1,2]``, ``{"body": 1}``) raises
there, and Celery stops the worker with "Unrecoverable error" (the item, already popped,
is gone). This Transport is kombu's own with two guards: such an item is logged and set
aside in the dead-letter list (shared.core.dead_letters) through the handler the worker
installs, and the worker goes on. Everything else is kombu's.

install() points kombu's "redis" and "rediss" transport names (a redis+socket:// URL uses
"redis" too) at this class, for the worker processes that consume queues.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Message as VirtualMessage

log = logging.getLogger(__name__)

# (raw item, queue, reason): called for each item that is not a kombu message.
JunkHandler = Callable[[bytes | str, str, str], None]

_handler: JunkHandler | None = None


class NotAMessage(Exception):
    """A queue item kombu cannot make a message of."""


class GuardedMessage(VirtualMessage):
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel=channel, **kwargs)
        except Exception as exc:  # any shape of junk: a list, a dict without properties, bad base64
            raise NotAMessage(f"not a kombu message: {exc!r}") from exc


class Channel(kombu_redis.Channel):
    Message = GuardedMessage

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # Raised by kombu's own parse of the popped item (the body inside is decoded
            # later, by Celery, and its errors are kombu DecodeErrors the consumer handles).
            raw = exc.doc if isinstance(exc, json.JSONDecodeError) else exc.object
            _set_aside(raw, ",".join(self._active_queues) or "?", f"not a kombu message: {exc}")
            return True


class Transport(kombu_redis.Transport):
    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        try:
            super()._deliver(message, queue)
        except NotAMessage as exc:
            _set_aside(json.dumps(message, default=repr), queue, str(exc))


def _set_aside(raw: bytes | str, queue: str, reason: str) -> None:
    if _handler is None:
        log.error("dropped an item of queue %r that is not a kombu message: %s", queue, reason)
        return
    _handler(raw, queue, reason)


def install(handler: JunkHandler) -> None:
    """Use this transport for redis:// URLs in this process; junk goes to handler."""
    global _handler
    _handler = handler
    for name in ("redis", "rediss"):
        TRANSPORT_ALIASES[name] = f"{__name__}:Transport"
