"""Hostile messages on real processes: junk bodies, bodies that are not a job or a result,
and oversized bodies on both queues; and a job whose worker keeps dying. None of them may
stop a worker, and none may disappear: each is set aside in the dead-letter list (or, for a
job, sent to errors) and shown by `kcap status`."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.core.celery_app import CAPTION_TASK, ROUTE_TASK
from shared.core.embedded_redis import EmbeddedRedis
from shared.core.settings import Settings
from tests.conftest import (
    REPO,
    Processes,
    pipeline_folders,
    pipeline_settings,
    require_redis_server,
    running_stack,
    wait_for,
)
from tests.integration.helpers import (
    children,
    drop_images,
    publish_raw,
    records,
    redis_client,
    routed_sources,
    rss_bytes,
)
from tests.integration.monitoring import kcap_status

# The dead-letter list: newest first, one JSON object per message set aside.
DEAD_LETTERS = "kcap:dead_letters"
MAX_FILE_BYTES = 200_000

# Valid JSON that is not Celery's [args, kwargs, embed] body, and bodies that are.
JUNK = ["null", "{}", "123", "[1,2]", '"text"', "[[], {}, {}]", "not json at all"]
NOT_A_JOB = '[[{"kind": "job", "job_id": "zz"}, "route"], {}, {}]'
NOT_A_RESULT = '[[{"kind": "result", "job_id": "abcdef0123456789"}], {}, {}]'
# Queue items that are not kombu's JSON envelope at all.
NOT_ENVELOPES = ["null", "garbage", "[1,2]", '{"body": "x"}', '{"properties": {}}']


@dataclass
class Stack:
    settings: Settings
    procs: Processes
    url: str

    def dead_letters(self) -> list[dict[str, object]]:
        client = redis_client(self.url)
        try:
            return [json.loads(raw) for raw in client.lrange(DEAD_LETTERS, 0, -1)]
        finally:
            client.close()

    def worker_pids(self) -> dict[str, list[int]]:
        """The Celery process under each supervisor: a restart changes it."""
        return {str(p.args[-1]): children(p.pid) for p in self.procs.started}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path]) -> Iterator[Stack]:
    require_redis_server()
    base = tmp_path_factory.mktemp("poison")
    server = EmbeddedRedis(base / "redis").start()
    try:
        overrides = {"visibility_timeout_s": 4, "max_file_bytes": MAX_FILE_BYTES}
        with running_stack(base, tiny_models, server.url, **overrides) as (settings, procs):
            yield Stack(settings, procs, server.url)
    finally:
        server.close()


def _wait_ready(stack: Stack) -> dict[str, list[int]]:
    wait_for(
        lambda: stack.procs.logs().count(" ready.") >= 2,
        timeout_s=240,
        what="both workers ready",
        logs=stack.procs.tail,
    )
    return stack.worker_pids()


@pytest.mark.slow  # 5-7 s: keeps `make test` within its 6 minutes on a clean clone
def test_junk_on_both_queues_is_set_aside_and_the_jobs_behind_it_still_run(stack: Stack) -> None:
    settings = stack.settings
    before = _wait_ready(stack)
    sent: list[tuple[str, str, str]] = []  # (queue, body, task id)
    for queue, task in ((settings.caption_queue, CAPTION_TASK), (settings.route_queue, ROUTE_TASK)):
        for body in JUNK:
            sent.append((queue, body, publish_raw(stack.url, queue, body, task=task)))
    sent.append(
        (
            settings.caption_queue,
            NOT_A_JOB,
            publish_raw(stack.url, settings.caption_queue, NOT_A_JOB, task=CAPTION_TASK),
        )
    )
    sent.append(
        (
            settings.route_queue,
            NOT_A_RESULT,
            publish_raw(stack.url, settings.route_queue, NOT_A_RESULT, task=ROUTE_TASK),
        )
    )
    # A well-formed body whose headers are junk, and a task nobody runs.
    sent.append(
        (
            settings.route_queue,
            NOT_A_RESULT,
            publish_raw(stack.url, settings.route_queue, NOT_A_RESULT, task=ROUTE_TASK, timelimit=5),
        )
    )
    sent.append(
        (
            settings.caption_queue,
            "[[], {}, {}]",
            publish_raw(stack.url, settings.caption_queue, "[[], {}, {}]", task="kcap.nonesuch"),
        )
    )

    # Items that are not even kombu messages, pushed straight onto the queues' lists.
    client = redis_client(stack.url)
    try:
        for queue in (settings.caption_queue, settings.route_queue):
            for raw in NOT_ENVELOPES:
                client.lpush(queue, raw)
    finally:
        client.close()

    # Real images queued behind the junk are captioned and routed.
    expected = drop_images(settings, 3, seed=61, prefix="behind-junk-")
    wait_for(
        lambda: set(expected) <= set(routed_sources(settings)),
        timeout_s=120,
        what="the images behind the junk routed",
        logs=stack.procs.tail,
    )
    expected_letters = len(sent) + 2 * len(NOT_ENVELOPES)
    wait_for(
        lambda: len(stack.dead_letters()) >= expected_letters,
        timeout_s=30,
        what=f"{expected_letters} dead letters",
        logs=stack.procs.tail,
    )
    logs = stack.procs.logs()
    assert "Unrecoverable error" not in logs
    assert "restarting" not in logs
    assert stack.worker_pids() == before, "a worker process was replaced"

    letters = stack.dead_letters()
    by_id = {str(letter["id"]): letter for letter in letters}
    for queue, body, task_id in sent:
        letter = by_id[task_id]
        assert letter["queue"] == queue, letter
        assert letter["body"] == body, letter
        assert letter["body_bytes"] == len(body.encode())
        assert isinstance(letter["reason"], str) and letter["reason"], letter
        assert isinstance(letter["time"], float)
    assert "not a job" in str(by_id[sent[-4][2]]["reason"])
    assert "not a result" in str(by_id[sent[-3][2]]["reason"])
    assert "kcap.nonesuch" in str(by_id[sent[-1][2]]["reason"])
    # An item that parsed as JSON is kept as kombu parsed it (re-encoded), any other as it came.
    # An item that is not JSON at all fails kombu's parse after the pop, which does not say
    # which of the worker's queues it came from: its letter names them all (the caption worker
    # reads the caption and the shard queue).
    both = f"{settings.caption_queue},{settings.shard_queue}"
    items = sorted(
        (settings.caption_queue if x["queue"] == both else str(x["queue"]), _same_json(str(x["body"])))
        for x in letters
        if x["id"] is None
    )
    queues = (settings.caption_queue, settings.route_queue)
    assert items == sorted((q, _same_json(raw)) for q in queues for raw in NOT_ENVELOPES)
    assert all(str(x["reason"]).startswith("not a kombu message") for x in letters if x["id"] is None)

    client = redis_client(stack.url)
    try:
        assert client.llen(settings.caption_queue) == 0 and client.llen(settings.route_queue) == 0
        held = [
            raw
            for raw in (raw for _, raw in client.hscan_iter("unacked"))
            if any(t.encode() in raw for _, _, t in sent)
        ]
        assert not held, "a junk message is still waiting to be redelivered"
    finally:
        client.close()

    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
    report = kcap_status(env)
    assert report["dead_letters"]["count"] == len(letters)  # type: ignore[index]
    newest = report["dead_letters"]["newest"]  # type: ignore[index]
    assert [n["reason"] for n in newest] == [str(letter["reason"]) for letter in letters[: len(newest)]]
    assert 1 <= len(newest) <= 5


def _same_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return text


@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_an_oversized_message_is_refused_before_it_is_decoded_and_its_memory_given_back(stack: Stack) -> None:
    settings = stack.settings
    _wait_ready(stack)
    router = next(p for p in stack.procs.started if p.args[-1] == "router")
    (route_process,) = children(router.pid)
    rss_before = rss_bytes(route_process)
    caption = "x" * (120 * 1024 * 1024)
    big = json.dumps([[{"kind": "result", "job_id": "ab" * 8, "caption": caption}], {}, {}])
    del caption
    big_id = publish_raw(stack.url, settings.route_queue, big, task=ROUTE_TASK)
    size = len(big)
    del big
    wait_for(
        lambda: any(letter["id"] == big_id for letter in stack.dead_letters()),
        timeout_s=60,
        what="the big message set aside",
        logs=stack.procs.tail,
    )
    letter = next(letter for letter in stack.dead_letters() if letter["id"] == big_id)
    assert letter["body_bytes"] == size and letter["body_truncated"] is True
    assert len(str(letter["body"])) <= 4096
    assert "over the limit" in str(letter["reason"])
    assert children(router.pid) == [route_process]
    # The router lets the memory go once it has set the message aside, with no other message
    # to come (kombu used to keep it until the next one: about 3 times the body, for good).
    # Polled, not slept: on a loaded machine the last steps take a moment.
    wait_for(
        lambda: rss_bytes(route_process) - rss_before < 64 * 1024 * 1024,
        timeout_s=30,
        what=f"the router's memory back near {rss_before / 2**20:.0f} MiB "
        f"(now {rss_bytes(route_process) / 2**20:.0f} MiB)",
        logs=stack.procs.tail,
    )

    # The caption side has its own limit, from the file-size cap.
    big_job = json.dumps([[{"kind": "job", "image_b64": "A" * (20 * MAX_FILE_BYTES)}, "route"], {}, {}])
    job_id = publish_raw(stack.url, settings.caption_queue, big_job, task=CAPTION_TASK)
    wait_for(
        lambda: any(letter["id"] == job_id for letter in stack.dead_letters()),
        timeout_s=60,
        what="the big job set aside",
        logs=stack.procs.tail,
    )
    assert "restarting" not in stack.procs.logs()


@pytest.mark.slow  # two worker kills, restarts and redeliveries: about 40 s
def test_a_job_whose_worker_dies_again_and_again_goes_to_errors(
    tmp_path: Path, tiny_models: tuple[Path, Path], redis_url: str, procs: Processes
) -> None:
    # One job that waits in the batcher for ten minutes: a worker killed while it waits
    # dies "on" it, as an OOM kill in preprocessing would.
    settings = pipeline_settings(
        pipeline_folders(tmp_path),
        tiny_models,
        broker_url=redis_url,
        batch_size=4,
        batch_wait_ms=600_000,
        visibility_timeout_s=2,
    )
    deaths = {"KCAP_MAX_WORKER_DEATHS": "2"}
    supervisor = procs.kcap("worker", settings=settings, extra_env=deaths)
    procs.kcap("router", settings=settings, extra_env=deaths)
    (name,) = drop_images(settings, 1, seed=71, prefix="killer-")
    procs.kcap("watch", settings=settings, extra_env=deaths)

    def received() -> int:
        return len(re.findall(rf"Task {re.escape(CAPTION_TASK)}\[[^]]+\] received", procs.logs()))

    for death in (1, 2):
        wait_for(lambda d=death: received() >= d, timeout_s=120, what=f"delivery {death}", logs=procs.tail)
        (child,) = children(supervisor.pid)
        time.sleep(0.5)  # the task has started: it waits in the batcher
        os.kill(child, signal.SIGKILL)
        wait_for(lambda c=child: children(supervisor.pid) not in ([], [c]), timeout_s=60, what="a new worker")

    wait_for(lambda: name in routed_sources(settings), timeout_s=120, what="the job routed", logs=procs.tail)
    (record,) = records(settings)["errors"]
    assert record["source"] == name
    assert record["reason"] == "worker died 2 times on this input"
    assert record["error_class"] == "WorkerDied"
    assert not records(settings)["output"]
