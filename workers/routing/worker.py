"""The route worker process: consumes the route queue on the storage host."""

from __future__ import annotations

from shared.core.attempts import Attempts
from shared.core.celery_app import make_app, worker_argv
from shared.core.message_guard import guard_worker
from shared.core.settings import Settings
from workers.routing.task import register_route_task


def run_route_worker(settings: Settings, *, name: str, concurrency: int = 16) -> None:
    client, dead_letters = guard_worker(settings, worker=name)
    app = make_app(settings)
    register_route_task(
        app,
        settings,
        dead_letters=dead_letters,
        attempts=Attempts(client, settings.keys, settings.route_queue),
        worker=name,
    )
    app.worker_main(worker_argv(settings.route_queue, concurrency=concurrency, name=name))
