"""Results leave a caption worker in batches: what finished together shares one message."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.core.messages import Result
from shared.core.publisher import StubPublisher
from workers.captioning.result_sender import ResultSender, under_budget


def _result(i: int, caption: str = "a small test image") -> Result:
    return Result(job_id=f"{i:032x}", rel_path=f"f{i}.png", content_sha256="0" * 64, ok=True, caption=caption)


def test_results_finishing_together_share_one_message_and_each_sender_waits_for_it() -> None:
    publisher = StubPublisher()
    sender = ResultSender(publisher, max_results=16, gather_s=0.5).start()
    barrier = threading.Barrier(16)

    def send(i: int) -> int:
        barrier.wait()  # like a batch's pool threads, all woken by the batch's end
        sender.send(_result(i), queue="route")
        return len(publisher.results)  # published before send returned

    try:
        with ThreadPoolExecutor(16) as pool:
            seen = list(pool.map(send, range(16)))
    finally:
        sender.stop()
    assert publisher.route_messages == 1
    assert sorted(r.job_id for r, _ in publisher.results) == sorted(f"{i:032x}" for i in range(16))
    assert all(queue == "route" for _, queue in publisher.results)
    assert min(seen) == 16  # no thread returned before the message holding its result was sent


def test_results_for_other_queues_never_share_a_message() -> None:
    publisher = StubPublisher()
    sender = ResultSender(publisher, max_results=8, gather_s=0.2).start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: sender.send(_result(i), queue=f"route-{i % 2}"), range(4)))
    finally:
        sender.stop()
    assert publisher.route_messages == 2
    by_queue = {q: sorted(r.job_id for r, q2 in publisher.results if q2 == q) for _, q in publisher.results}
    assert by_queue == {"route-0": [f"{0:032x}", f"{2:032x}"], "route-1": [f"{1:032x}", f"{3:032x}"]}


def test_a_publish_failure_reaches_every_waiting_sender() -> None:
    class Down(StubPublisher):
        def send_results(self, results: list[Result], *, queue: str) -> None:
            raise ConnectionError("redis is away")

    sender = ResultSender(Down(), max_results=4, gather_s=0.2).start()
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(sender.send, _result(i), queue="route") for i in range(4)]
            for future in futures:
                with pytest.raises(ConnectionError, match="redis is away"):
                    future.result()
    finally:
        sender.stop()


def test_a_batch_over_the_message_budget_is_split_in_order_and_a_huge_result_goes_alone() -> None:
    results = [_result(i, caption="w" * 300) for i in range(10)] + [_result(10, caption="w" * 5000)]
    chunks = list(under_budget(results, budget_bytes=1500))
    assert [r.job_id for chunk in chunks for r in chunk] == [r.job_id for r in results]
    assert all(1 <= len(chunk) <= 3 for chunk in chunks[:-1])
    assert [r.job_id for r in chunks[-1]] == [f"{10:032x}"]
