"""Hostile files through real processes (issue 10): image bytes under names kcap writes, a
writer that pauses longer than --stable-after-s, and temp files left by a killed route
worker. Every image ends in exactly one folder, nothing is lost, no left-over stays."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.folder_lock import LOCK_NAME
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import image_bytes, records, routed_sources, write_slowly
from workers.tiny.images import tiny_images


def _all_files(root: Path | None) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root is not None and root.exists() else []


@pytest.mark.slow  # 5-7 s: keeps `make test` within its 6 minutes on a clean clone
def test_image_bytes_under_sidecar_names_go_to_errors_and_nothing_is_clobbered(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, input_mode="move")
    assert (
        settings.input_dir is not None and settings.errors_dir is not None and settings.output_dir is not None
    )
    images = [image_bytes(image) for image in tiny_images(5, seed=71)]
    # The first image routed would write output/metadata.jsonl and output/photo.json.
    dropped = {
        "photo.png": images[0],
        "photo.json": images[1],
        "shot.txt": images[2],
        "metadata.jsonl": images[3],
        "sub/notes.TXT": images[4],
    }
    for rel, data in dropped.items():
        (settings.input_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings.input_dir / rel).write_bytes(data)
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    procs.kcap("watch", settings=settings)
    wait_for(lambda: len(routed_sources(settings)) >= 5, timeout_s=90, what="5 routed", logs=procs.logs)

    found = records(settings)
    assert [r["source"] for r in found["output"]] == ["photo.png"]
    refused = {str(r["source"]): str(r["reason"]) for r in found["errors"]}
    assert sorted(refused) == ["metadata.jsonl", "photo.json", "shot.txt", "sub/notes.TXT"]
    assert all("rename it with its image extension" in reason for reason in refused.values())
    # Nothing clobbered: the dataset file and photo.png's record are kcap's own, whole.
    lines = (settings.output_dir / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in lines] == ["photo.png"]
    assert json.loads((settings.output_dir / "photo.json").read_text())["source"] == "photo.png"
    # Move mode: every image's bytes exist exactly once, in output or errors.
    placed = [p.read_bytes() for root in (settings.output_dir, settings.errors_dir) for p in _all_files(root)]
    for data in dropped.values():
        assert placed.count(data) == 1
    assert _all_files(settings.input_dir) == []


@pytest.mark.slow
def test_a_writer_pausing_longer_than_the_stability_wait_gets_one_outcome_and_no_errors(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    # Pauses of 0.8 s against a stability wait of 0.3 s: the producer reads each part.
    settings = make_settings(broker_url=redis_url, bad_image_settle_s=2.5)
    assert settings.input_dir is not None
    data = image_bytes(tiny_images(1, seed=72)[0].resize((256, 256)), "BMP")  # large and uncompressed
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    procs.kcap("watch", settings=settings)
    time.sleep(1.0)  # the watcher is up
    write_slowly(settings.input_dir / "slow.bmp", data, chunks=4, pause_s=0.8)
    wait_for(
        lambda: routed_sources(settings) == ["slow.bmp"],
        timeout_s=60,
        what="slow.bmp routed",
        logs=procs.logs,
    )
    time.sleep(4.0)  # any refused part would be filed by now
    found = records(settings)
    assert [r["source"] for r in found["output"]] == ["slow.bmp"], found
    assert found["errors"] == []
    assert found["output"][0]["content_sha256"] == hashlib.sha256(data).hexdigest()
    for root in (settings.output_dir, settings.errors_dir):
        hidden = [p.name for p in _all_files(root) if p.name.startswith(".") and p.name != LOCK_NAME]
        assert hidden == []  # no temp file left (the route worker's lock file is its own)


def test_temp_files_of_a_killed_route_worker_are_swept_and_fresh_ones_kept(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.output_dir is not None and settings.errors_dir is not None
    old = time.time() - 3600
    abandoned = [
        settings.output_dir / "sub" / ".kcap-tmp-0a1b2c-a.png",
        settings.errors_dir / ".kcap-tmp-3d4e-b.json",
    ]
    for path in abandoned:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a copy")
        os.utime(path, (old, old))
    fresh = settings.output_dir / ".kcap-tmp-5f6a-c.png"  # another route host writing now
    fresh.write_bytes(b"in progress")
    router = procs.kcap("router", settings=settings)
    procs.kcap("watch", settings=settings)  # its start-up scan sweeps the destination folders
    wait_for(lambda: not any(p.exists() for p in abandoned), timeout_s=30, what="the sweep", logs=procs.logs)
    assert fresh.exists() and router.poll() is None
