"""The dead-letter list, the job start counts and `kcap status`'s view of them, on a real Redis."""

from __future__ import annotations

import base64
import json

import pytest

from shared.core import dead_letters as dl
from shared.core.attempts import Attempts, Deaths
from shared.core.broker import redis_client
from shared.core.dead_letters import DeadLetter, DeadLetters
from shared.core.embedded_redis import EmbeddedRedis
from shared.core.keys import keys_for
from shared.core.settings import Settings
from shared.core.status import collect, render


def _letter(body: bytes | str, reason: str = "junk", queue: str = "route") -> DeadLetter:
    return DeadLetter.of(body, queue=queue, reason=reason, task="kcap.route", id="t-1", worker="route@h")


def test_a_body_is_kept_as_text_or_base64_and_cut_to_a_bounded_size() -> None:
    small = _letter("null")
    assert (small.body, small.body_bytes, small.body_truncated, small.body_encoding) == (
        "null",
        4,
        False,
        "utf-8",
    )
    raw = b"[" + b"1," * 1_000_000 + b"1]"
    big = _letter(raw)
    assert big.body_bytes == len(raw) and big.body_truncated
    assert len(big.body) == dl.MAX_BODY_CHARS and big.body.startswith("[1,1,")
    # A multi-byte character cut at the end of the kept part does not make it binary.
    accents = _letter(("é" * 5000).encode())
    assert accents.body_encoding == "utf-8" and set(accents.body) == {"é"} and accents.body_truncated
    binary = _letter(b"\x80\x04\x95" + bytes(range(256)) * 40)
    assert binary.body_encoding == "base64" and binary.body_truncated
    assert base64.b64decode(binary.body).startswith(b"\x80\x04\x95")
    assert len(binary.body) <= dl.MAX_BODY_CHARS
    assert json.loads(small.encode())["reason"] == "junk"


def test_dead_letters_are_listed_newest_first_counted_and_trimmed(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "MAX_KEPT", 3)
    client = redis_client(redis_url, decode_responses=True)
    letters = DeadLetters(client, keys_for("one-"))
    for n in range(5):
        letters.add(_letter(f"body {n}", reason=f"reason {n}"))
    assert letters.total() == 5
    assert [letter["reason"] for letter in letters.newest(10)] == ["reason 4", "reason 3", "reason 2"]
    assert client.llen("kcap:one-dead_letters") == 3
    assert DeadLetters(client, keys_for("two-")).total() == 0  # per instance
    client.close()


def test_kcap_status_shows_the_count_and_the_newest_reasons(redis_url: str) -> None:
    client = redis_client(redis_url, decode_responses=True)
    letters = DeadLetters(client, keys_for(""))
    for n in range(7):
        letters.add(_letter("{}", reason=f"body is an object, not Celery's\n[args] #{n}", queue="caption"))
    report = collect(Settings(broker_url=redis_url))
    assert report["dead_letters"]["count"] == 7
    assert [n["reason"] for n in report["dead_letters"]["newest"]] == [
        f"body is an object, not Celery's\n[args] #{n}" for n in (6, 5, 4, 3, 2)
    ]
    text = render(report)
    assert "set aside   7 message(s)" in text
    assert "caption: body is an object, not Celery's [args] #6" in text  # one line each
    letters.add(_letter("x", reason="no worker runs \x1b[2J\x1b]0;pwned\x07 " + "y" * 500))
    text = render(collect(Settings(broker_url=redis_url)))
    assert "\x1b" not in text and "\x07" not in text and "no worker runs ?[2J?]0;pwned? yyy" in text
    assert max(len(line) for line in text.splitlines()) < 200
    client.close()


def test_a_start_that_never_ended_counts_as_a_death(redis_url: str, redis_server: EmbeddedRedis) -> None:
    client = redis_client(redis_url)
    admin = redis_client(redis_server.admin_url)
    # Each Attempts stands for one worker process; `dead` is killed while on the job.
    dead, live = Attempts(client, keys_for(""), "caption"), Attempts(client, keys_for(""), "caption")
    attempt = live.start("ab12")
    assert attempt.deaths == Deaths()
    live.end(attempt)  # done, retried or given up: not a death
    dead.start("ab12")
    dead.start("ab12", alone=True)  # nothing ends either start: the process died twice on it
    attempt = live.start("ab12")
    assert attempt.deaths == Deaths(alone=1, beside=1) and attempt.deaths.total == 2
    assert live.deaths("ab12") == Deaths(alone=1, beside=1)  # its own start is no death
    assert 0 < admin.ttl("kcap:attempts:caption:ab12") <= 24 * 3600
    live.end(attempt)  # done at last: its deaths are forgotten
    assert live.start("ab12").deaths == Deaths()
    assert Attempts(client, keys_for(""), "route").start("ab12").deaths == Deaths()  # per queue
    client.close()
    admin.close()


def test_a_job_started_twice_at_once_in_one_process_is_no_death(redis_url: str) -> None:
    client = redis_client(redis_url)
    attempts, other_process = Attempts(client, keys_for(""), "route"), Attempts(client, keys_for(""), "route")
    first = attempts.start("cd34")
    second = attempts.start("cd34")  # another thread of the same process, on the same job
    assert second.deaths == Deaths()
    with attempts.attempt("cd34") as deaths:
        assert deaths == Deaths()
    attempts.end(first)  # the second is still at work: its start stays recorded
    assert other_process.deaths("cd34") == Deaths(beside=1)  # as it would if this process died now
    attempts.end(second)
    assert other_process.deaths("cd34") == Deaths()
    client.close()
