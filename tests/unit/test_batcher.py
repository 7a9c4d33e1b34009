from __future__ import annotations

import threading
import time

import pytest

from workers.captioning.batcher import Batcher


def _echo_batcher(
    calls: list[tuple[str, list[int]]], *, max_size: int, max_wait_s: float
) -> Batcher[str, int, int]:
    def run(key: str, items: list[int]) -> list[int]:
        calls.append((key, list(items)))
        return [i * 10 for i in items]

    return Batcher(run, max_size=max_size, max_wait_s=max_wait_s).start()


def test_flushes_at_max_size_without_waiting() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _echo_batcher(calls, max_size=4, max_wait_s=30.0)
    try:
        futures = [batcher.submit("p", i) for i in range(8)]
        assert [f.result(timeout=5) for f in futures] == [i * 10 for i in range(8)]
        assert [len(items) for _, items in calls] == [4, 4]
    finally:
        batcher.stop()


def test_flushes_a_partial_batch_after_max_wait() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _echo_batcher(calls, max_size=16, max_wait_s=0.05)
    try:
        started = time.monotonic()
        future = batcher.submit("p", 1)
        assert future.result(timeout=5) == 10
        waited = time.monotonic() - started
        assert 0.04 <= waited < 2.0
        assert calls == [("p", [1])]
    finally:
        batcher.stop()


def test_items_batch_only_with_equal_keys() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _echo_batcher(calls, max_size=8, max_wait_s=0.05)
    try:
        futures = [batcher.submit("a" if i % 2 else "b", i) for i in range(6)]
        for f in futures:
            f.result(timeout=5)
        by_key = {key: items for key, items in calls}
        assert sorted(by_key["a"]) == [1, 3, 5]
        assert sorted(by_key["b"]) == [0, 2, 4]
    finally:
        batcher.stop()


def test_a_failing_batch_fails_every_waiter_and_the_runner_goes_on() -> None:
    def run(key: str, items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky batch")
        return items

    batcher: Batcher[str, int, int] = Batcher(run, max_size=2, max_wait_s=0.01).start()
    try:
        bad = [batcher.submit("k", 13), batcher.submit("k", 14)]
        for future in bad:
            with pytest.raises(ValueError, match="unlucky"):
                future.result(timeout=5)
        assert batcher.submit("k", 7).result(timeout=5) == 7
    finally:
        batcher.stop()


def test_many_threads_submitting_get_their_own_results() -> None:
    calls: list[tuple[str, list[int]]] = []
    batcher = _echo_batcher(calls, max_size=5, max_wait_s=0.02)
    results: dict[int, int] = {}

    def submit(i: int) -> None:
        results[i] = batcher.submit("p", i).result(timeout=10)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: i * 10 for i in range(40)}
        assert max(len(items) for _, items in calls) <= 5
    finally:
        batcher.stop()
