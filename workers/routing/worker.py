"""The route worker process: consumes the route queue on the storage host."""

from __future__ import annotations

from shared.core.celery_app import make_app, worker_argv
from shared.core.settings import Settings
from workers.routing.task import register_route_task


def run_route_worker(settings: Settings, *, name: str, concurrency: int = 4) -> None:
    app = make_app(settings)
    register_route_task(app, settings)
    app.worker_main(worker_argv(settings.route_queue, concurrency=concurrency, name=name))
