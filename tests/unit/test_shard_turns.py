"""Shard turns, and the tap that stops a busy worker fetching shard jobs it cannot run: with a
real Celery worker (in a thread, Celery's own test worker) on the test's Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from tests.conftest import wait_for
from workers.captioning.shard_turns import ShardTap, ShardTurns

SHARDS = "t-shards"


def test_turns_run_at_most_their_share_and_a_waiting_delivery_takes_the_next() -> None:
    turns = ShardTurns(2, wait_s=0.05)
    assert turns.take() and turns.take()
    assert not turns.take()
    assert not turns.wait()  # none frees within wait_s: given back
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(turns.wait()))
    turns.wait_s = 30.0
    waiter.start()
    turns.give()
    waiter.join(timeout=30)
    assert got == [True] and turns.running == 2


@pytest.fixture
def worker_app(redis_url: str) -> Iterator[tuple[Celery, ShardTap]]:
    app = Celery("kcap-tap-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_queues=None, accept_content=["json"], worker_hijack_root_logger=False)
    tap = ShardTap(SHARDS)
    tap.install(app)
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, queues=[SHARDS, "t-other"]
    ):
        yield app, tap
    app.close()


def _consuming(app: Celery) -> set[str]:
    replies = app.control.inspect(timeout=5.0, limit=1).active_queues() or {}
    return {queue["name"] for queues in replies.values() for queue in queues}


def test_a_worker_with_every_turn_taken_stops_consuming_the_shard_queue_until_one_frees(
    worker_app: tuple[Celery, ShardTap],
) -> None:
    app, tap = worker_app
    assert tap.attached and _consuming(app) == {SHARDS, "t-other"}
    turns = ShardTurns(2, wait_s=30.0, tap=tap)
    assert turns.take()
    assert _consuming(app) == {SHARDS, "t-other"}  # a turn is still free
    assert turns.take()
    wait_for(lambda: _consuming(app) == {"t-other"}, timeout_s=20, what="the shard queue paused")
    # One delivery may wait for the next turn; with the tap attached any other is refused at
    # once (back to the queue, where this worker no longer fetches it).
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(turns.wait()))
    waiter.start()
    wait_for(lambda: turns._waiting == 1, timeout_s=20, what="one delivery waiting")
    assert not turns.wait()
    turns.give()  # the waiter takes it: still full
    waiter.join(timeout=30)
    assert got == [True] and turns.running == 2
    turns.give()
    wait_for(lambda: _consuming(app) == {SHARDS, "t-other"}, timeout_s=20, what="the shard queue resumed")
