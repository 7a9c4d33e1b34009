"""The app that Flower's `celery -A shared.core.flower_app:app` imports.

Building it from KCAP_* variables at import is this module's whole purpose, and the reason it
stands apart: nothing else imports it, so no other import can fail on a bad KCAP_* value.

It also closes a gap in Flower 2: its `/metrics` and `/healthcheck` answer without the login
that guards every other page (worker and task names, counts, hosts). Flower builds its web
app from flower.urls.handlers after importing this module, so swapping those two handlers
for ones that ask for the login (Flower's own check, the one its pages use) reaches every
Flower kcap starts, and changes nothing when no login is set (loopback).
"""

from __future__ import annotations

from typing import Any

import tornado.web
from celery import Celery
from flower import urls
from flower.views import monitor

from shared.core.celery_app import make_app
from shared.core.logs import configure_logging
from shared.core.settings import Settings


class AuthenticatedMetrics(monitor.Metrics):
    @tornado.web.authenticated
    async def get(self) -> None:
        await super().get()


class AuthenticatedHealthcheck(monitor.Healthcheck):
    @tornado.web.authenticated
    async def get(self) -> None:
        await super().get()


def _guard_open_handlers(handlers: list[Any]) -> None:
    swaps: dict[type, type] = {
        monitor.Metrics: AuthenticatedMetrics,
        monitor.Healthcheck: AuthenticatedHealthcheck,
    }
    for index, entry in enumerate(handlers):
        if isinstance(entry, tuple) and entry[1] in swaps:
            handlers[index] = (entry[0], swaps[entry[1]], *entry[2:])


def _from_environment() -> Celery:
    settings = Settings.build()
    if not settings.broker_url:
        return Celery("kcap", set_as_current=False)
    return make_app(settings)


_guard_open_handlers(urls.handlers)
# kcap's logging before Flower's: tornado then adds no stderr handler of its own, so under
# `kcap up` Flower logs to its file under the state folder, passwords masked, and its console
# shows only what matters (not "Inspect method ... failed" while the workers load models).
configure_logging()
app = _from_environment()
