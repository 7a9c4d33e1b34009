"""PixelBudget: the pixels prepared at once stay under the budget, and nothing waits for ever."""

from __future__ import annotations

import threading
import time

import pytest

from workers.captioning.memory import release_freed_memory
from workers.captioning.pixel_budget import PixelBudget


def test_holders_never_exceed_the_budget_and_all_finish() -> None:
    budget = PixelBudget(100)
    peak = 0
    lock = threading.Lock()
    done: list[int] = []

    def work(pixels: int) -> None:
        nonlocal peak
        with budget.hold(pixels):
            with lock:
                peak = max(peak, budget.in_flight)
            time.sleep(0.01)
        done.append(pixels)

    sizes = [60, 30, 40, 10, 90, 50, 20, 70] * 3
    threads = [threading.Thread(target=work, args=(n,)) for n in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(done) == sorted(sizes)
    assert 0 < peak <= 100
    assert budget.in_flight == 0


def test_an_image_larger_than_the_whole_budget_runs_alone() -> None:
    budget = PixelBudget(100)
    entered = threading.Event()
    release = threading.Event()

    def big() -> None:
        with budget.hold(10_000):
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=big)
    thread.start()
    assert entered.wait(5)
    assert budget.in_flight == 100
    small_done = threading.Event()

    def small() -> None:
        with budget.hold(1):
            small_done.set()

    other = threading.Thread(target=small)
    other.start()
    assert not small_done.wait(0.2), "a second image ran beside one that takes the whole budget"
    release.set()
    thread.join(5)
    assert small_done.wait(5)
    other.join(5)


def test_a_failure_inside_hold_gives_the_pixels_back() -> None:
    budget = PixelBudget(10)
    with pytest.raises(RuntimeError), budget.hold(10):
        raise RuntimeError("decode failed")
    assert budget.in_flight == 0


def test_freed_memory_is_returned_to_the_system_on_glibc() -> None:
    # This machine runs glibc; where the C library has no malloc_trim the call says so.
    assert release_freed_memory() is True
