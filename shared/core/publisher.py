"""Sending jobs and results: through Celery in production, into lists in tests.

Task logic (the producer's enqueue, the caption task's reply) talks to a Publisher, so it can
be tested in process without a worker, the way dramatiq ships a stub broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from celery import Celery

from shared.core.celery_app import CAPTION_TASK, ROUTE_BATCH_TASK, ROUTE_TASK
from shared.core.messages import Job, Result


class Publisher(Protocol):
    def send_job(self, job: Job) -> None:
        """Queue a job for the caption workers; its results go to the job's reply queue."""

    def send_result(self, result: Result, *, queue: str) -> None:
        """Queue a result for the route worker that consumes queue."""

    def send_results(self, results: list[Result], *, queue: str) -> None:
        """Queue results for the route worker that consumes queue, as one message."""


@dataclass
class CeleryPublisher:
    app: Celery
    caption_queue: str
    route_queue: str  # where this storage host's route worker listens

    def send_job(self, job: Job) -> None:
        self.app.send_task(CAPTION_TASK, args=[job.to_dict(), self.route_queue], queue=self.caption_queue)

    def send_result(self, result: Result, *, queue: str) -> None:
        self.app.send_task(ROUTE_TASK, args=[result.to_dict()], queue=queue)

    def send_results(self, results: list[Result], *, queue: str) -> None:
        self.app.send_task(ROUTE_BATCH_TASK, args=[[r.to_dict() for r in results]], queue=queue)


@dataclass
class StubPublisher:
    """Keeps what would have been sent, for tests of task logic."""

    jobs: list[Job] = field(default_factory=list)
    results: list[tuple[Result, str]] = field(default_factory=list)
    route_messages: int = 0  # a batch of results is one message

    def send_job(self, job: Job) -> None:
        self.jobs.append(job)

    def send_result(self, result: Result, *, queue: str) -> None:
        self.results.append((result, queue))
        self.route_messages += 1

    def send_results(self, results: list[Result], *, queue: str) -> None:
        self.results.extend((result, queue) for result in results)
        self.route_messages += 1
