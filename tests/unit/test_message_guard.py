"""GuardedStrategy's verdicts on real kombu messages: every shape a worker could never run
gets a reason, and a real job and result get none. (tests/integration/test_poison_messages.py
sends these to real workers through a real Redis.)"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from kombu.message import Message

from shared.core.message_guard import GuardedStrategy, caption_message_limit
from shared.core.messages import Result
from workers.routing.task import check_route_arguments

RESULT = Result(job_id="ab" * 8, rel_path="a.png", content_sha256="0" * 64, ok=False).to_dict()


def route(result_data: dict[str, Any]) -> None:
    """The route task's signature."""


def _verdict(body: str | bytes, **headers: Any) -> str | None:
    message = Message(
        body=body.encode() if isinstance(body, str) else body,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"task": "kcap.route", "id": "t-1", **headers},
    )
    guard = GuardedStrategy(max_bytes=10_000, check=check_route_arguments)
    return guard._problem(message, None, inspect.signature(route))


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        ("null", {}, "body is null, not Celery's [args, kwargs, embed]"),
        ("{}", {}, "body is an object"),
        ("123", {}, "body is a number"),
        ("[1,2]", {}, "body is a list of 2"),
        ('"x"', {}, "body is a string"),
        ("not json", {}, "body is not valid JSON"),
        ("[1, {}, {}]", {}, "args must be a list"),
        ("[[], [], {}]", {}, "kwargs an object"),
        ("[[], {}, 5]", {}, "third item must be an object"),
        ("[[], {}, {}]", {}, "arguments do not fit the task"),
        ("[[1, 2], {}, {}]", {}, "arguments do not fit the task"),
        ('[[{"kind": "result"}], {}, {}]', {}, "not a result"),
        ("[[5], {}, {}]", {}, "not a result"),
        (json.dumps([[RESULT], {}, {"callbacks": [{"task": "kcap.route"}]}]), {}, "callbacks"),
        (json.dumps([[RESULT], {}, {"chord": {"task": "x"}}]), {}, "chords"),
        (json.dumps([[RESULT], {}, {}]), {"id": None}, "no task id"),
        (json.dumps([[RESULT], {}, {}]), {"timelimit": 5}, "timelimit"),
        (json.dumps([[RESULT], {}, {}]), {"timelimit": ["a", None]}, "timelimit"),
        (json.dumps([[RESULT], {}, {}]), {"retries": -1}, "retries"),
        (json.dumps([[RESULT], {}, {}]), {"argsrepr": {"a": 1}}, "argsrepr"),
        ("[" + " " * 10_000 + "]", {}, "message of 10002 bytes is over the limit of 10000 bytes"),
    ],
)
def test_what_a_worker_could_never_run_gets_a_reason(body: str, headers: dict[str, Any], reason: str) -> None:
    verdict = _verdict(body, **headers)
    assert verdict is not None and reason in verdict, verdict


def test_a_real_result_passes_and_so_do_celerys_own_headers() -> None:
    assert _verdict(json.dumps([[RESULT], {}, {}])) is None
    headers = {"timelimit": [None, None], "retries": 2, "root_id": "r", "parent_id": None}
    assert _verdict(json.dumps([[RESULT], {}, {"callbacks": None, "chain": None}]), **headers) is None


def test_the_caption_limit_fits_the_largest_file_a_job_may_carry() -> None:
    assert caption_message_limit(3_000_000) == 4_000_000 + 256 * 1024
    assert caption_message_limit(64 * 1024 * 1024) > 64 * 1024 * 1024 * 4 // 3
