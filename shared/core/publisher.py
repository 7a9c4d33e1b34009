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

# The file names a route batch shows in Flower; a batch holds up to --batch-size results.
SHOWN_NAMES = 8
SHOWN_CHARS = 120  # of a long path, its end: the file name is what one searches for


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
        self.app.send_task(
            CAPTION_TASK,
            args=[job.to_dict(), self.route_queue],
            queue=self.caption_queue,
            **shown_as([job.rel_path]),
        )

    def send_result(self, result: Result, *, queue: str) -> None:
        self.app.send_task(ROUTE_TASK, args=[result.to_dict()], queue=queue, **shown_as([result.rel_path]))

    def send_results(self, results: list[Result], *, queue: str) -> None:
        self.app.send_task(
            ROUTE_BATCH_TASK,
            args=[[r.to_dict() for r in results]],
            queue=queue,
            **shown_as([r.rel_path for r in results]),
        )


def shown_as(rel_paths: list[str], *, limit: int = SHOWN_NAMES) -> dict[str, str]:
    """How Flower (and Celery's own log lines) show a task's arguments: the files it carries.

    A message's arguments hold a job's image bytes and a result's whole record; Celery would
    show a truncated repr of them. The names alone let Flower's search find a file's task.
    """
    ends = [path if len(path) <= SHOWN_CHARS else "..." + path[-SHOWN_CHARS:] for path in rel_paths[:limit]]
    shown = [repr(end) for end in ends]
    if len(rel_paths) > limit:
        shown.append(f"... {len(rel_paths) - limit} more")
    return {"argsrepr": f"[{', '.join(shown)}]", "kwargsrepr": "{}"}


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
