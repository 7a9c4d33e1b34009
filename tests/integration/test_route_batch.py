"""A caption batch's results reach the route worker as one message (`kcap.route_batch`).

A real `kcap router` files a batch in which one result is fine, one names a path outside
the input folder and one is a failed decode of an input that changed a moment ago: the first
is filed at once, the second is set aside as a one-result message, and only the third is
sent round again, filed once its input has been still for --bad-image-settle-s.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from shared.core.broker import redis_client
from shared.core.celery_app import ROUTE_BATCH_TASK, ROUTE_TASK
from shared.core.dead_letters import DeadLetters
from shared.core.messages import Result
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import image_bytes, records
from tests.results import result_for
from workers.tiny.images import tiny_images


def _result(settings: Settings, name: str, data: bytes, **fields: object) -> Result:
    assert settings.input_dir is not None
    return result_for(name, data, enqueued_at=time.time(), **fields)


def test_a_batch_files_what_it_can_and_sends_round_only_what_must_wait(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, bad_image_settle_s=3.0)
    assert settings.input_dir is not None
    good, bad = (image_bytes(image) for image in tiny_images(2, seed=41))
    (settings.input_dir / "good.png").write_bytes(good)
    (settings.input_dir / "bad.png").write_bytes(bad)  # changed just now: not yet settled
    batch = [
        _result(settings, "good.png", good, ok=True, caption="a small test image", score=30.0),
        _result(settings, "../escape.png", good, ok=True, caption="outside", score=30.0),
        _result(settings, "bad.png", bad, ok=False, error_reason="truncated", error_class="BadImageError"),
    ]
    procs.kcap("router", settings=settings)
    app = Celery("kcap-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    # bad.png stays "changed just now" until good.png is filed: a router slow to start under
    # load must still find it unsettled when the batch arrives, whatever the start took.
    touching = threading.Event()
    toucher = threading.Thread(target=_touch_until, args=(settings.input_dir / "bad.png", touching))
    toucher.start()
    sent_at = time.monotonic()
    try:
        app.send_task(ROUTE_BATCH_TASK, args=[[r.to_dict() for r in batch]], queue=settings.route_queue)
        app.close()
        wait_for(lambda: len(records(settings)["output"]) == 1, timeout_s=60, what="good", logs=procs.tail)
    finally:
        touching.set()
        toucher.join()
    assert records(settings)["errors"] == []  # bad.png waits for its input to settle
    wait_for(lambda: len(records(settings)["errors"]) == 1, timeout_s=60, what="bad.png", logs=procs.tail)
    assert time.monotonic() - sent_at >= 2.0  # filed only after it had been still long enough
    (error,) = records(settings)["errors"]
    assert error["source"] == "bad.png" and error["error_class"] == "BadImageError"
    assert (settings.output_dir / "good.txt").read_text() == "a small test image"  # type: ignore[operator]

    letters = DeadLetters(redis_client(redis_url), settings.keys).newest(10)
    assert len(letters) == 1
    assert letters[0]["task"] == ROUTE_TASK and "refused path '../escape.png'" in letters[0]["reason"]
    args, _, _ = json.loads(letters[0]["body"])
    assert [Result.from_dict(a).rel_path for a in args] == ["../escape.png"]  # resendable on its own
    logs = procs.logs()
    assert "routing it again" in logs
    assert "already routed" not in logs  # the retry carried bad.png alone, not the filed ones


def _touch_until(path: Path, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        os.utime(path)
