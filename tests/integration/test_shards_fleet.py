"""Many hosts: caption workers that share one Redis take shard jobs from one queue, and
`kcap submit` queues the jobs into that running fleet (no storage host in the data path:
each worker reads and writes the shards itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from shared.core.settings import Settings
from tests.conftest import REPO, Processes, wait_for
from tests.integration.shard_helpers import read_tars, shard_args, shard_settings, tiny_pngs, write_tar_shard


@pytest.mark.slow
def test_kcap_submit_queues_shards_that_two_workers_share(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path, redis_url: str
) -> None:
    pngs = tiny_pngs(16, seed=41)
    for n in range(8):
        write_tar_shard(
            tmp_path / "in" / f"{n:05d}.tar", [(f"f{n}-{i}", {"png": pngs[2 * n + i]}) for i in range(2)]
        )
    settings = shard_settings(make_settings(broker_url=redis_url, threshold=-1000.0))
    for host in ("hosta", "hostb"):  # two hosts, as far as the queue can tell
        procs.kcap("worker", "--name-prefix", host, settings=settings)
    # Both consume before the jobs go out: a host still loading its models under load would
    # leave every shard to the other, which says nothing about sharing one queue.
    app = Celery("kcap-test", broker=redis_url, set_as_current=False)
    try:
        wait_for(
            lambda: len(app.control.ping(timeout=1.0)) >= 2,
            timeout_s=180,
            what="both workers consuming",
            logs=procs.tail,
        )
    finally:
        app.close()
    submit = procs.kcap("submit", *shard_args(str(tmp_path / "in"), tmp_path), "--wait", settings=settings)
    submit.wait(timeout=240)
    assert submit.returncode == 0, procs.tail()
    assert "8 shard job(s) queued" in procs.logs()
    assert len(read_tars(tmp_path / "output")) == 16
    markers = [json.loads(p.read_text()) for p in (tmp_path / "captions" / "_done").glob("*.json")]
    assert len(markers) == 8
    workers = {m["worker"].split("-", 1)[0] for m in markers}
    assert workers == {"hosta", "hostb"}, workers  # both took shard jobs from the one queue

    # `kcap status` counts the shards and their samples.
    status = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "status", "--json"],
        env={**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(status.stdout)
    assert report["shards"]["shards"]["done"] == 8 and report["shards"]["samples"]["output"] == 16
