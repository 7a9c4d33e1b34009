"""Security on real parts: a password-protected redis-server, real worker/router/watch
processes. JSON only, writes only inside the roots, no password in any log or sidecar,
and the file-size cap. The processes are shared by the module's tests (one model load)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kombu import Connection, Queue

from shared.core.broker import redis_client
from shared.core.celery_app import CAPTION_TASK, ROUTE_TASK, make_app
from shared.core.embedded_redis import EmbeddedRedis
from shared.core.messages import Job, Result
from shared.core.naming import job_id_for
from shared.core.settings import Settings
from tests.conftest import Processes, require_redis_server, running_stack, wait_for
from tests.integration.helpers import image_bytes, records, routed_sources
from workers.tiny.images import tiny_images

MAX_FILE_BYTES = 50_000


@dataclass
class Secured:
    settings: Settings
    procs: Processes
    password: str
    base: Path

    def log_of(self, command: str) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in self.procs.log_dir.glob(f"proc-*-{command}.log")
        )

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.procs.log_dir.glob("*.log")))

    def drop(self, rel: str, data: bytes) -> Path:
        assert self.settings.input_dir is not None
        path = self.settings.input_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def wait_routed(self, rel: str, *, timeout_s: float = 30) -> None:
        wait_for(
            lambda: rel in routed_sources(self.settings),
            timeout_s=timeout_s,
            what=f"{rel} routed",
            logs=self.all_logs,
        )

    def send_route(self, result: Result | dict[str, object]) -> None:
        payload = result if isinstance(result, dict) else result.to_dict()
        app = make_app(self.settings)
        try:
            app.send_task(ROUTE_TASK, args=[payload], queue=self.settings.route_queue)
        finally:
            app.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path]) -> Iterator[Secured]:
    require_redis_server()
    base = tmp_path_factory.mktemp("secured")
    password = f"pw-{secrets.token_hex(12)}"
    server = EmbeddedRedis(base / "redis", password=password).start()
    try:
        with running_stack(base, tiny_models, server.url, max_file_bytes=MAX_FILE_BYTES) as (settings, procs):
            yield Secured(settings, procs, password, base)
    finally:
        server.close()


def _snapshot(root: Path, *, skip: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Every path under root (but the skipped top-level folders) with its size and mtime."""
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] in skip:
            continue
        stat = os.lstat(path)
        found[rel.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


class Canary:
    """Unpickling this creates a folder: proof that a pickle body was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_a_pickle_message_is_refused_unexecuted_and_json_jobs_still_run(secured: Secured) -> None:
    settings = secured.settings
    canary = secured.base / f"pickle-ran-{uuid.uuid4().hex[:8]}"
    data = image_bytes(tiny_images(1, seed=5)[0])
    sha = hashlib.sha256(data).hexdigest()
    job = Job(
        job_id=job_id_for("pickled.png", sha),
        rel_path="pickled.png",
        content_sha256=sha,
        size=len(data),
        mtime=time.time(),
        image_b64=Job.encode_bytes(data),
        options=settings.caption_options(),
        enqueued_at=time.time(),
    )
    task_id = str(uuid.uuid4())
    # A well-formed Celery (protocol 2) caption message, but with a pickle body that would
    # create the canary folder when loaded. It is sent straight to the real Redis with kombu.
    body = ([job.to_dict(), settings.route_queue, Canary(canary)], {}, {})
    headers = {"lang": "py", "task": CAPTION_TASK, "id": task_id, "root_id": task_id, "retries": 0}
    with Connection(settings.broker_url) as connection:
        producer = connection.Producer(serializer="pickle")
        producer.publish(
            body,
            routing_key=settings.caption_queue,
            headers=headers,
            declare=[Queue(settings.caption_queue)],
            retry=True,
        )
    wait_for(
        lambda: "ContentDisallowed" in secured.log_of("worker") or canary.exists(),
        timeout_s=30,
        what="the worker to refuse the pickle message",
        logs=secured.all_logs,
    )
    assert not canary.exists(), "the worker unpickled a message body"
    worker_log = secured.log_of("worker")
    assert "Refusing to deserialize untrusted content of type pickle" in worker_log

    # A JSON job after it still runs: the worker kept going.
    secured.drop("after-pickle.png", image_bytes(tiny_images(1, seed=6)[0]))
    secured.wait_routed("after-pickle.png")
    assert secured.procs.started[0].poll() is None
    assert "pickled.png" not in routed_sources(settings)
    assert not canary.exists()
    # Refused, not parked for redelivery: nothing of it is left in the queues, and it is set
    # aside, still unread (base64 of its pickle bytes), with the reason.
    client = redis_client(str(settings.broker_url))
    try:
        assert client.llen(settings.caption_queue) == 0
        assert not any(
            task_id.encode() in value for value in (raw for _, raw in client.hscan_iter("unacked"))
        )
        letters = [json.loads(raw) for raw in client.lrange(settings.keys.dead_letters, 0, -1)]
    finally:
        client.close()
    (letter,) = [letter for letter in letters if letter["id"] == task_id]
    assert letter["queue"] == settings.caption_queue and letter["body_encoding"] == "base64"
    assert "untrusted content of type pickle" in letter["reason"]
    assert not canary.exists()


def _escape_result(rel_path: str, data: bytes, *, ok: bool = True) -> Result:
    sha = hashlib.sha256(data).hexdigest()
    return Result(
        job_id=uuid.uuid4().hex,
        rel_path=rel_path,
        content_sha256=sha,
        ok=ok,
        caption="" if not ok else "an escape attempt",
        score=50.0 if ok else None,
        error_reason="" if ok else "forged",
        error_class="" if ok else "Forged",
    )


def test_route_messages_cannot_write_or_read_outside_the_roots(secured: Secured) -> None:
    settings = secured.settings
    assert settings.input_dir is not None and settings.output_dir is not None
    base = secured.base
    outside = base / f"outside-{uuid.uuid4().hex[:6]}"
    outside.mkdir()
    secret = b"not for the output folder"
    (outside / "secret.jpg").write_bytes(secret)
    # A folder link in the input (reading out) and one in the output (writing out). Hidden
    # folders keep the watcher out of it: only the forged messages touch these files.
    (settings.input_dir / ".peek").symlink_to(outside, target_is_directory=True)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    (settings.output_dir / ".leak").symlink_to(outside, target_is_directory=True)
    secured.drop(".leak/real.jpg", b"real bytes")
    before = _snapshot(base, skip=("logs", "redis"))

    forged = [
        _escape_result("../escaped-up.jpg", b"x"),
        _escape_result("sub/../../escaped-mid.jpg", b"x"),
        _escape_result(str(outside / "absolute.jpg"), b"x"),
        _escape_result(str(outside / "absolute-error.jpg"), b"x", ok=False),
        _escape_result("nul\x00byte.jpg", b"x"),
        _escape_result("../../../../../../../../tmp/kcap-escape.jpg", b"x", ok=False),
        _escape_result(".peek/secret.jpg", secret),  # copy a file from outside into output
        _escape_result(".leak/real.jpg", b"real bytes"),  # write through output/.leak
    ]
    for result in forged:
        secured.send_route(result)
    wait_for(
        lambda: all(r.job_id in secured.log_of("router") for r in forged),
        timeout_s=30,
        what="a router log line for every forged message",
        logs=secured.all_logs,
    )
    # A genuine route message after them is still placed.
    genuine = b"genuine bytes"
    secured.drop(".manual/genuine.jpg", genuine)
    secured.send_route(_escape_result(".manual/genuine.jpg", genuine))
    secured.wait_routed(".manual/genuine.jpg")

    router_log = secured.log_of("router")
    for result in forged:
        line = next(line for line in router_log.splitlines() if result.job_id in line)
        assert "refused path" in line, line
    assert not Path("/tmp/kcap-escape.jpg").exists()
    after = _snapshot(base, skip=("logs", "redis"))
    # metadata.jsonl gains the genuine image's line (checked below), nothing else.
    metadata = "captioned/metadata.jsonl"
    created = sorted(set(after) - set(before) - {metadata})
    changed = sorted(k for k in before if after.get(k) != before[k] and k != metadata)
    lines = (secured.base / metadata).read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in lines if "genuine" in line] == [".manual/genuine.jpg"]
    # Only the genuine message's files, and its input, are new; nothing else changed.
    assert created == [
        "captioned/.manual",
        "captioned/.manual/genuine.jpg",
        "captioned/.manual/genuine.json",
        "captioned/.manual/genuine.txt",
        "inbox/.manual",
        "inbox/.manual/genuine.jpg",
    ], created
    assert set(changed) <= {"captioned", "inbox"}, changed  # folder mtimes: new entries
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]
    assert not any(str(r["source"]).endswith("secret.jpg") for r in records(settings)["output"])


def test_a_forged_content_hash_cannot_steer_a_write_outside_the_roots(secured: Secured) -> None:
    settings = secured.settings
    assert settings.errors_dir is not None
    name = f"gone-{uuid.uuid4().hex[:6]}.jpg"  # no input file: an error record is still written
    first = _escape_result(name, b"a", ok=False)
    secured.send_route(first)
    wait_for(
        lambda: (settings.errors_dir / f"{name}.error.json").exists(),  # type: ignore[operator]
        timeout_s=20,
        what="the first record",
        logs=secured.all_logs,
    )
    before = _snapshot(secured.base, skip=("logs", "redis"))
    # The plain name is taken, so the router would try "<stem>-<content_sha256[:8]>" next;
    # the hash is forged to climb out. It must be refused when the message is decoded.
    job_id = uuid.uuid4().hex
    forged = {
        **Result(job_id=job_id, rel_path=name, content_sha256="0" * 64, ok=False).to_dict(),
        "content_sha256": "/../../z" + "0" * 56,
        "error_reason": "forged",
        "error_class": "Forged",
    }
    secured.send_route(forged)
    wait_for(
        lambda: "content_sha256 must be 64 lowercase hex digits" in secured.log_of("router"),
        timeout_s=20,
        what="the router to handle the forged message",
        logs=secured.all_logs,
    )
    time.sleep(0.3)
    created = set(_snapshot(secured.base, skip=("logs", "redis"))) - set(before)
    roots = ("captioned", "clip_failed", "errors")
    assert not [c for c in created if c.split("/")[0] not in roots], created
    assert not (secured.base / "z.jpg.error.json").exists()


def test_a_file_over_the_size_cap_is_refused_with_a_reason(secured: Secured) -> None:
    settings = secured.settings
    assert settings.errors_dir is not None
    big = image_bytes(tiny_images(1, seed=8, size=(256, 256))[0].effect_spread(40))
    big += b"\0" * max(0, MAX_FILE_BYTES + 1 - len(big))  # trailing bytes: still a valid PNG
    assert len(big) > MAX_FILE_BYTES
    path = secured.drop("big.png", big)
    secured.wait_routed("big.png")
    record = next(r for r in records(settings)["errors"] if r["source"] == "big.png")
    assert record["error_class"] == "Refused"
    assert f"file is {len(big)} bytes, over the cap of {MAX_FILE_BYTES}" in str(record["reason"])
    assert "KCAP_MAX_FILE_BYTES" in str(record["reason"])
    assert record["content_sha256"] == hashlib.sha256(big).hexdigest()
    assert (settings.errors_dir / "big.png").read_bytes() == big  # kept, not lost
    assert path.read_bytes() == big  # and not deleted
    assert "big.png" not in {str(r["source"]) for r in records(settings)["output"]}


def test_the_redis_password_works_and_never_reaches_a_log_or_a_sidecar(secured: Secured) -> None:
    settings = secured.settings
    assert secured.password in str(settings.broker_url)
    secured.drop("passworded.png", image_bytes(tiny_images(1, seed=9)[0]))
    secured.wait_routed("passworded.png")
    assert any(r["source"] == "passworded.png" for r in records(settings)["output"])
    logs = secured.all_logs()
    assert "redis+socket://:***@/" in logs or "redis+socket://:**@/" in logs  # it did log the URL
    assert secured.password not in logs
    assert secured.password not in repr(settings)
    sidecars = [p for p in secured.base.rglob("*.json") if "redis" not in p.relative_to(secured.base).parts]
    assert sidecars
    for sidecar in sidecars:
        assert secured.password not in sidecar.read_text(errors="replace"), sidecar
