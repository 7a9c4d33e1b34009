"""Results leave a caption worker in batches: one route message for what finished together.

A batch's results come out of the model at the same moment, each in its own Celery pool
thread. Sent one message each, the route worker pays Celery's per-message cost (receiving,
the task request, its events, the ack) once per image, which caps one storage host at a few
hundred images a second. Here each thread hands its result to a short batcher and waits until
the message holding it is published: the job is acknowledged only after that (late acks), so
a worker killed with results waiting loses nothing; Redis hands those jobs out again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from shared.core.message_guard import ROUTE_MESSAGE_LIMIT_BYTES
from shared.core.messages import Result
from shared.core.publisher import Publisher
from workers.captioning.batcher import Batcher

# Results that finish within this long of each other share a message. A batch's results
# arrive within a millisecond or two; a lone result waits no longer than this.
GATHER_S = 0.02
# A route message stays well under the route queue's limit: kombu stores the body base64'd.
MESSAGE_BUDGET_BYTES = ROUTE_MESSAGE_LIMIT_BYTES // 2


class ResultSender:
    """Publishes results to their route queues, many per message."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        max_results: int,
        gather_s: float = GATHER_S,
        budget_bytes: int = MESSAGE_BUDGET_BYTES,
    ) -> None:
        self._publisher = publisher
        self._budget_bytes = budget_bytes
        self._batcher: Batcher[str, Result, None] = Batcher(
            self._publish, max_size=max(1, max_results), max_wait_s=gather_s, name="kcap-results"
        )
        self.messages = 0

    def start(self) -> ResultSender:
        self._batcher.start()
        return self

    def stop(self) -> None:
        """Publish what is waiting, then end the sender's thread."""
        self._batcher.stop()

    def send(self, result: Result, *, queue: str) -> None:
        """Returns once a message holding the result is published; raises what publishing raised."""
        self._batcher.submit(queue, result).result()

    def _publish(self, queue: str, results: list[Result]) -> list[None]:
        for chunk in under_budget(results, self._budget_bytes):
            self._publisher.send_results(chunk, queue=queue)
            self.messages += 1
        return [None] * len(results)


def under_budget(results: list[Result], budget_bytes: int) -> Iterator[list[Result]]:
    """The results in order, in runs whose JSON fits the budget (a larger one goes alone)."""
    chunk: list[Result] = []
    size = 0
    for result in results:
        # An estimate from the result's own JSON; Celery's envelope around it is small.
        length = len(json.dumps(result.to_dict(), separators=(",", ":")))
        if chunk and size + length > budget_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(result)
        size += length
    if chunk:
        yield chunk
