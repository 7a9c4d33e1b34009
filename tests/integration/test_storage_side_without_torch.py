"""The storage host's commands run where the model stack is not installed.

`kcap watch`, `kcap router`, `kcap status`, `kcap export`, `kcap report` and `kcap flower` run
here as real processes with torch, transformers and tokenizers made unimportable (a folder
first on PYTHONPATH shadows each with a package whose import fails, in every child process
too), the way a slim storage container without the "models" extra has none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.broker import redis_client
from shared.core.embedded_redis import free_port
from shared.core.messages import Result
from shared.core.naming import job_id_for
from shared.core.settings import Settings
from shared.core.status import queue_depth
from tests.conftest import REPO, Processes, kcap_to_the_end, wait_for
from tests.integration.helpers import image_bytes, records
from tests.integration.monitoring import answers
from workers.tiny.images import tiny_images

MODEL_STACK = ("torch", "transformers", "tokenizers")


@pytest.fixture
def no_model_stack(tmp_path: Path) -> dict[str, str]:
    """Environment for a child process in which the model stack cannot be imported."""
    shadow = tmp_path / "no-model-stack"
    for name in MODEL_STACK:
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on this storage host')\n"
        )
    return {"PYTHONPATH": f"{shadow}{os.pathsep}{REPO}"}


def _kcap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return kcap_to_the_end({**os.environ, **env}, *args)


def test_the_shadow_really_hides_the_model_stack(no_model_stack: dict[str, str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env={**os.environ, **no_model_stack}, capture_output=True
    )
    assert probe.returncode != 0 and b"not installed on this storage host" in probe.stderr


def test_watch_router_status_export_report_and_flower_run_without_torch(
    make_settings: Callable[..., Settings],
    redis_url: str,
    procs: Processes,
    no_model_stack: dict[str, str],
    tmp_path: Path,
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None and settings.output_dir is not None
    env = {**settings.to_env(), **no_model_stack}
    procs.kcap("router", settings=settings, extra_env=no_model_stack)
    procs.kcap("watch", settings=settings, extra_env=no_model_stack)
    flower_port = free_port()
    procs.kcap("flower", "--flower-port", str(flower_port), settings=settings, extra_env=no_model_stack)

    # The producer reads, hashes and queues a dropped image: a job waits on the caption queue.
    data = image_bytes(tiny_images(1, seed=3)[0])
    (settings.input_dir / "a.png").write_bytes(data)
    client = redis_client(redis_url)
    wait_for(
        lambda: queue_depth(client, settings.caption_queue) == 1,
        timeout_s=30,
        what="a job on the caption queue",
        logs=procs.tail,
    )

    # The route worker files a result as a GPU host would send it.
    sha = hashlib.sha256(data).hexdigest()
    result = Result(
        job_id=job_id_for("a.png", sha),
        rel_path="a.png",
        content_sha256=sha,
        ok=True,
        caption="a small test image",
        score=20.0,
        enqueued_at=time.time(),
    )
    from celery import Celery

    app = Celery("kcap-test", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task("kcap.route", args=[result.to_dict()], queue=settings.route_queue)
    app.close()
    wait_for(
        lambda: len(records(settings)["output"]) == 1, timeout_s=60, what="the result filed", logs=procs.tail
    )
    assert (settings.output_dir / "a.txt").read_text().strip() == "a small test image"

    status = _kcap(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report_json = json.loads(status.stdout)
    # The result carried a.png's job id: filing it freed the claim the producer took for it.
    assert report_json["outcomes"]["output"] == 1 and report_json["in_flight"] == 0

    export = _kcap(env, "export", str(settings.output_dir), "--out", str(tmp_path / "x.csv"))
    assert export.returncode == 0, export.stderr
    assert "a small test image" in (tmp_path / "x.csv").read_text()
    report = _kcap(env, "report", str(settings.output_dir), "--out", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    assert "a.png" in (tmp_path / "r.html").read_text()

    wait_for(lambda: answers(f"http://127.0.0.1:{flower_port}/healthcheck"), timeout_s=60, what="Flower up")
    assert "not installed on this storage host" not in procs.logs()
