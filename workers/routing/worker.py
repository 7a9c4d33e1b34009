"""The route worker process: consumes the route queue on the storage host."""

from __future__ import annotations

from shared.core.attempts import Attempts
from shared.core.broker import redis_client
from shared.core.celery_app import make_app, worker_argv
from shared.core.dead_letters import DeadLetters
from shared.core.message_guard import DeadLetterHook
from shared.core.settings import Settings
from workers.routing.task import register_route_task


def run_route_worker(settings: Settings, *, name: str, concurrency: int = 4) -> None:
    app = make_app(settings)
    client = redis_client(settings.require_broker())
    dead_letters = DeadLetters(client, settings.keys)
    DeadLetterHook(dead_letters, worker=name).connect()
    register_route_task(
        app,
        settings,
        dead_letters=dead_letters,
        attempts=Attempts(client, settings.keys, settings.route_queue),
        worker=name,
    )
    app.worker_main(worker_argv(settings.route_queue, concurrency=concurrency, name=name))
