"""The route worker killed while it files a batch: every result still lands exactly once.

A real `kcap router` gets one `kcap.route_batch` of 24 results for large JPEGs and is
SIGKILLed while it copies them, three times over; a short visibility timeout brings the same
message back each time. A redelivered batch is the same message, so a result that was only
beside the copy the worker died in must not be counted as the killer, and a copy that the
kill cut short (the image in place, its record not yet written) must be completed, never
left as a bare image while the input lands elsewhere, and its temp files removed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from shared.core.celery_app import ROUTE_BATCH_TASK
from shared.core.folder_lock import LOCK_NAME
from shared.core.messages import Result
from shared.core.naming import METADATA_NAME, TEMP_PREFIX
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import children, large_jpegs, records
from tests.results import result_for

THRESHOLD = 15.0


def _result(name: str, data: bytes, *, score: float) -> Result:
    return result_for(
        name, data, ok=True, caption=f"a photo named {name}", score=score, enqueued_at=time.time()
    )


def _send_batch(settings: Settings, url: str, batch: list[Result]) -> None:
    app = Celery("kcap-test", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task(ROUTE_BATCH_TASK, args=[[r.to_dict() for r in batch]], queue=settings.route_queue)
    app.close()


def _route_process(supervisor: int) -> int:
    found: list[int] = []

    def one() -> bool:
        found[:] = children(supervisor)
        return len(found) == 1

    wait_for(one, timeout_s=60, what="the route worker process")
    return found[0]


def _temp_files(roots: list[Path | None]) -> set[Path]:
    """kcap's temp files in roots: a copy under way, or one that a kill cut short."""
    return {p for root in roots if root is not None and root.exists() for p in root.glob(f"{TEMP_PREFIX}*")}


def _assert_each_once(settings: Settings, expected: dict[str, str]) -> None:
    """Each input in exactly its own folder, with its caption, record and dataset line; no
    bare image anywhere; nothing filed as an error."""
    roots = {"output": settings.output_dir, "clip_failed": settings.clip_failed_dir}
    found = records(settings)
    assert found["errors"] == [], [(r["source"], r["reason"]) for r in found["errors"]]
    placed = {str(r["source"]): name for name, group in found.items() for r in group}
    assert placed == expected
    for name, root in roots.items():
        assert root is not None
        # No temp file either: a result whose filing died removes the ones that filing left.
        files = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)  # the route worker's lock
        stems = sorted(Path(source).stem for source, where in expected.items() if where == name)
        want = sorted(
            [f"{s}.jpg" for s in stems] + [f"{s}.txt" for s in stems] + [f"{s}.json" for s in stems]
        )
        if stems:
            want = sorted([*want, METADATA_NAME])
        assert files == want, f"{name}: {sorted(set(files) ^ set(want))}"
        if stems:
            lines = [json.loads(line) for line in (root / METADATA_NAME).read_text().splitlines()]
            assert sorted(line["file_name"] for line in lines) == sorted(f"{s}.jpg" for s in stems)
    assert settings.errors_dir is not None
    left = [p.name for p in settings.errors_dir.iterdir()] if settings.errors_dir.exists() else []
    assert left in ([], [LOCK_NAME])


@pytest.mark.slow  # three kills, the supervisor's back-off (1 + 2 + 4 s) and restarts: about 20 s
def test_a_route_worker_killed_mid_batch_files_every_image_once(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, visibility_timeout_s=2, threshold=THRESHOLD)
    assert settings.input_dir is not None and settings.output_dir is not None
    batch, expected = [], {}
    for index, data in enumerate(large_jpegs(24, seed=5)):
        name = f"big{index:02d}.jpg"
        (settings.input_dir / name).write_bytes(data)
        score = 30.0 if index % 3 else 5.0  # a third go to clip-failed
        batch.append(_result(name, data, score=score))
        expected[name] = "output" if score >= THRESHOLD else "clip_failed"

    supervisor = procs.kcap("router", settings=settings)
    _send_batch(settings, redis_url, batch)

    def received() -> int:
        return len(re.findall(rf"Task {re.escape(ROUTE_BATCH_TASK)}\[[^]]+\] received", procs.logs()))

    destinations: list[Path | None] = [settings.output_dir, settings.clip_failed_dir]
    cut_short: set[Path] = set()
    # As many kills as --max-worker-deaths (3): with more, a result that was being filed alone
    # at every kill could not be told from one that kills the worker, and would be given up on.
    for delivery in (1, 2, 3):
        wait_for(
            lambda d=delivery: received() >= d, timeout_s=60, what=f"delivery {delivery}", logs=procs.tail
        )
        child = _route_process(supervisor.pid)
        deadline = time.monotonic() + 30
        while not _temp_files(destinations) - cut_short:  # a copy of this delivery has begun
            assert time.monotonic() < deadline, f"no copy began in delivery {delivery}\n{procs.tail()}"
            time.sleep(0.002)
        os.kill(child, signal.SIGKILL)
        wait_for(lambda c=child: children(supervisor.pid) not in ([], [c]), timeout_s=60, what="a new worker")
        cut_short = _temp_files(destinations)
    assert len(records(settings)["output"]) + len(records(settings)["clip_failed"]) < 24, (
        "kills landed too late"
    )

    wait_for(
        lambda: sum(len(group) for group in records(settings).values()) >= 24,
        timeout_s=120,
        what="all 24 filed",
        logs=procs.tail,
    )
    wait_for(
        lambda: "succeeded" in procs.logs(), timeout_s=30, what="the batch acknowledged", logs=procs.tail
    )
    _assert_each_once(settings, expected)
    assert sorted(p.name for p in settings.input_dir.iterdir()) == sorted(expected)  # nothing deleted


def test_the_same_result_twice_in_a_batch_is_filed_once(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    # Results that finish together leave a worker in one message; a job delivered twice to
    # the caption side (a stale-claim resend) can put the same result in one batch again.
    settings = make_settings(broker_url=redis_url, threshold=THRESHOLD)
    assert settings.input_dir is not None and settings.output_dir is not None
    (twice, other) = large_jpegs(2, side=400, seed=6)
    (settings.input_dir / "twice.jpg").write_bytes(twice)
    (settings.input_dir / "other.jpg").write_bytes(other)
    repeated = _result("twice.jpg", twice, score=30.0)
    procs.kcap("router", settings=settings)
    _send_batch(settings, redis_url, [repeated] * 8 + [_result("other.jpg", other, score=5.0)])

    wait_for(lambda: "succeeded" in procs.logs(), timeout_s=60, what="the batch filed", logs=procs.tail)
    _assert_each_once(settings, {"twice.jpg": "output", "other.jpg": "clip_failed"})
