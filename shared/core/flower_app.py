"""The app that Flower's `celery -A shared.core.flower_app:app` imports.

Building it from KCAP_* variables at import is this module's whole purpose, and the reason it
stands apart: nothing else imports it, so no other import can fail on a bad KCAP_* value.
"""

from __future__ import annotations

from celery import Celery

from shared.core.celery_app import make_app
from shared.core.settings import Settings


def _from_environment() -> Celery:
    settings = Settings.build()
    if not settings.broker_url:
        return Celery("kcap", set_as_current=False)
    return make_app(settings)


app = _from_environment()
