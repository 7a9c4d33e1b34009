"""Refusing, at the door, the messages a worker could never run, and setting them aside.

Celery builds a task request from a message in the consumer's own thread. A body that is
valid JSON but not Celery's ``[args, kwargs, embed]`` (``null``, ``{}``, ``123``, ``[1,2]``)
raises a TypeError there that nothing catches: the worker stops with "Unrecoverable error",
Redis hands the message out again, and the worker dies on it for ever.

GuardedStrategy is the task's Strategy (Celery's documented per-task hook that turns a
message into a request): before Celery's own strategy sees a message it checks the size
(before the body is decoded), the JSON, the shape, the headers Celery relies on, the
arguments against the task's signature and, through the task's own check, that they are a
job or a result. Anything wrong becomes Celery's InvalidTaskError, which the consumer
already handles: it logs it, acknowledges the message and sends ``task_rejected``.

DeadLetterHook listens to ``task_rejected`` and ``task_unknown`` (every message Celery's
consumer refuses: these, pickle and other refused content, a task nobody runs here, a
message without a task name) and to ``task_failure`` (a task that failed for good), and sets
each aside in the dead-letter list with its raw body and the reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import inspect
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, Task, signals
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy
from kombu.exceptions import DecodeError as KombuDecodeError

from shared.core import guarded_transport
from shared.core.broker import redis_client
from shared.core.dead_letters import DeadLetter, DeadLetters
from shared.core.errors import DecodeError
from shared.core.settings import Settings

log = logging.getLogger(__name__)

# A result holds captions and boxes, never image bytes.
ROUTE_MESSAGE_LIMIT_BYTES = 2 * 1024 * 1024
# Room in a job beside its image: ids, path, prompts and the other caption options.
_JOB_OVERHEAD_BYTES = 256 * 1024
# Freeing a refused body this big is followed by malloc_trim, so its pages go back.
_TRIM_AFTER_BYTES = 8 * 1024 * 1024

ArgumentCheck = Callable[[list[Any], dict[str, Any]], None]

# Headers that Celery reads while building a request, and what each may hold.
_TEXT_HEADERS = ("root_id", "parent_id", "group", "shadow", "argsrepr", "kwargsrepr", "origin", "lang")
_NO_CANVAS = ("callbacks", "errbacks", "chain", "chord")


def caption_message_limit(max_file_bytes: int) -> int:
    """The largest caption message: a job carries its image base64-encoded (4 bytes per 3)."""
    return 4 * math.ceil(max_file_bytes / 3) + _JOB_OVERHEAD_BYTES


@dataclass(frozen=True)
class GuardedStrategy:
    """A Celery task Strategy that refuses what the task could never run (see the module).

    check gets the arguments once they fit the task's signature and raises DecodeError,
    TypeError or ValueError when they are not what the task takes.
    """

    max_bytes: int
    check: ArgumentCheck = field(default=lambda args, kwargs: None)

    def __call__(self, task: Task, app: Celery, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
        handle = default_strategy(task, app, consumer, **kwargs)
        signature = inspect.signature(task.run)

        def guarded(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **rest: Any) -> Any:
            problem = self._problem(message, body, signature)
            if problem:
                raise InvalidTaskError(problem)
            try:
                return handle(message, body, ack, reject, callbacks, **rest)
            except Exception as exc:
                if isinstance(exc, InvalidTaskError | KombuDecodeError):
                    raise
                # Celery could not make a request of it; a worker must not die of that.
                raise InvalidTaskError(f"Celery cannot take this message: {exc!r}") from exc

        return guarded

    def _problem(self, message: Any, body: Any, signature: inspect.Signature) -> str | None:
        """Why this message can never run, or None."""
        size = len(message.body or b"")
        if size > self.max_bytes:
            return f"message of {size} bytes is over the limit of {self.max_bytes} bytes for this queue"
        if body is not None:
            return "not a Celery protocol 2 message (kcap sends nothing else)"
        try:
            payload = message.payload
        except KombuDecodeError as exc:
            return f"body is not valid JSON: {exc}"
        problem = _header_problem(message.headers) or _body_problem(payload)
        if problem:
            return problem
        args, kwargs, _embed = payload
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not fit the task: {exc}"
        try:
            self.check(args, kwargs)
        except (DecodeError, TypeError, ValueError) as exc:
            return str(exc)
        return None


def _header_problem(headers: Mapping[str, Any]) -> str | None:
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "no task id in the headers"
    for name in _TEXT_HEADERS:
        if not isinstance(headers.get(name), str | None):
            return f"header {name!r} must be text"
    retries = headers.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        return "header 'retries' must be a count"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in limits)
    ):
        return "header 'timelimit' must be [hard, soft] seconds"
    return None


def _body_problem(payload: Any) -> str | None:
    if not (isinstance(payload, list | tuple) and len(payload) == 3):
        return f"body is {_kind(payload)}, not Celery's [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return "body's args must be a list and its kwargs an object"
    if not isinstance(embed, dict | None):
        return "body's third item must be an object"
    if any((embed or {}).get(name) for name in _NO_CANVAS):
        return "callbacks, errbacks, chains and chords are not used by kcap"
    return None


def _kind(payload: Any) -> str:
    if isinstance(payload, list | tuple):
        return f"a list of {len(payload)}"
    return {type(None): "null", dict: "an object", str: "a string", bool: "true/false"}.get(
        type(payload), "a number"
    )


_libc: Any = None


def _give_back_memory(message: Any) -> None:
    """Once a big message is refused (rejected), let its memory go now.

    kombu forgets an acknowledged or rejected message lazily: it stays in the channel's
    delivered map, body and envelope, until the next delivery. A refused 200 MB route body
    so kept a router about 650 MB larger while its queue was quiet. Flushing that map frees
    them, and trimming glibc's heaps hands the pages back to the system.
    """
    global _libc
    if len(message.body or b"") < _TRIM_AFTER_BYTES:
        return
    message._decoded_cache = None
    flush = getattr(getattr(getattr(message, "channel", None), "qos", None), "_flush", None)
    if callable(flush):
        flush()
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


class DeadLetterHook:
    """Connects Celery's refusal and failure signals to the dead-letter list, for one worker."""

    def __init__(self, dead_letters: DeadLetters, *, worker: str) -> None:
        self.dead_letters = dead_letters
        self.worker = worker

    def connect(self) -> DeadLetterHook:
        signals.task_rejected.connect(self._rejected, weak=False)
        signals.task_unknown.connect(self._unknown, weak=False)
        signals.task_failure.connect(self._failed, weak=False)
        return self

    def disconnect(self) -> None:
        signals.task_rejected.disconnect(self._rejected)
        signals.task_unknown.disconnect(self._unknown)
        signals.task_failure.disconnect(self._failed)

    def set_aside(self, message: Any, reason: str) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        delivery = message.delivery_info or {}
        letter = DeadLetter.of(
            message.body,
            queue=str(delivery.get("routing_key") or delivery.get("exchange") or "?"),
            reason=reason,
            task=headers.get("task"),
            id=headers.get("id"),
            worker=self.worker,
        )
        _give_back_memory(message)
        self.dead_letters.add(letter)

    def set_aside_item(self, raw: bytes | str, queue: str, reason: str) -> None:
        """A queue item that is not even a kombu message (shared.core.guarded_transport)."""
        self.dead_letters.add(
            DeadLetter.of(raw, queue=queue, reason=reason, task=None, id=None, worker=self.worker)
        )

    def _rejected(self, sender: Any = None, message: Any = None, exc: Any = None, **_: Any) -> None:
        reason = str(exc) if exc is not None else "not a Celery task message (no task name)"
        self.set_aside(message, reason or type(exc).__name__)

    def _unknown(self, sender: Any = None, message: Any = None, name: Any = None, **_: Any) -> None:
        self.set_aside(message, f"no worker on this queue runs task {name!r}")

    def _failed(
        self,
        sender: Task | None = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        request = getattr(sender, "request", None)
        delivery = getattr(request, "delivery_info", None) or {}
        body = json.dumps([args, kwargs or {}, {}], default=repr)
        self.dead_letters.add(
            DeadLetter.of(
                body,
                queue=str(delivery.get("routing_key") or "?"),
                reason=f"the task failed for good: {exception!r}",
                task=getattr(sender, "name", None),
                id=task_id,
                worker=self.worker,
            )
        )


def guard_worker(settings: Settings, *, worker: str) -> tuple[redis.Redis, DeadLetters]:
    """Set up a worker process to set aside what it cannot run: Celery's refusals and
    failures, and queue items that are not kombu messages. Returns its Redis client and
    dead-letter list, for the task's own use."""
    client = redis_client(settings.require_broker())
    dead_letters = DeadLetters(client, settings.keys)
    hook = DeadLetterHook(dead_letters, worker=worker).connect()
    guarded_transport.install(hook.set_aside_item)
    return client, dead_letters
