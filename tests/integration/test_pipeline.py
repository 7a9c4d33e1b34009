"""The whole pipeline on real parts: redis-server, kcap worker/router/watch processes,
a real watchdog observer on a real folder, and tiny real transformers models."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import image_bytes, records, routed_sources, write_slowly
from workers.tiny.images import tiny_images


def test_dropped_images_are_each_routed_once_with_caption_and_record(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, threshold=-1000.0)
    assert settings.input_dir is not None and settings.output_dir is not None
    procs.kcap("worker", settings=settings)
    procs.kcap("router", settings=settings)
    procs.kcap("watch", settings=settings)

    images = tiny_images(20, seed=3)
    expected = []
    for i, image in enumerate(images[:19]):
        rel = f"{'sub/deeper/' if i % 3 == 0 else 'sub/' if i % 3 == 1 else ''}img {i:02d}.png"
        target = settings.input_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image_bytes(image))
        expected.append(rel)
    slow = threading.Thread(
        target=write_slowly, args=(settings.input_dir / "slow" / "slow.jpg", image_bytes(images[19], "JPEG"))
    )
    slow.start()
    expected.append("slow/slow.jpg")
    slow.join()

    wait_for(lambda: len(routed_sources(settings)) >= 20, timeout_s=120, what="20 routed", logs=procs.tail)
    assert routed_sources(settings) == sorted(expected)  # each exactly once
    found = records(settings)
    assert len(found["output"]) == 20 and not found["clip_failed"] and not found["errors"]
    captions = set()
    for record in found["output"]:
        image = Path(str(record["_path"])).with_suffix(Path(str(record["source"])).suffix)
        caption = Path(str(record["_path"])).with_suffix(".txt").read_text().strip()
        assert image.exists(), image
        assert caption == record["caption"] and caption
        assert isinstance(record["clip_score"], float)
        assert record["clip_chunks"] >= 1
        assert record["prompt"] == settings.prompts[0]
        assert record["caption_model"] == settings.caption_model
        # Greedy Kosmos-2: kcap's static-cache decoder wrote it, and the record says so.
        assert record["decoder"] == "kcap-static"
        assert record["clip_model"] == settings.clip_model
        assert len(str(record["content_sha256"])) == 64
        assert {"decode_s", "caption_batch_s", "score_batch_s", "queue_s"} <= set(record["timings"])  # type: ignore[arg-type]
        assert isinstance(record["entities"], list)
        captions.add(caption)
    assert len(captions) > 1  # the captions depend on the images
    slow_record = next(r for r in found["output"] if r["source"] == "slow/slow.jpg")
    assert (
        Path(str(slow_record["_path"])).with_suffix(".jpg").read_bytes()
        == (settings.input_dir / "slow" / "slow.jpg").read_bytes()
    )  # the whole file, not a prefix caught mid-copy
    assert len(list(settings.input_dir.rglob("*.*"))) == 20  # copy mode: nothing removed


def _run(settings: Settings, procs: Processes) -> subprocess.CompletedProcess[str]:
    process = procs.kcap("run", settings=settings)
    process.wait(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, procs.logs(), "")


def test_kcap_run_processes_the_backlog_exits_and_a_restart_skips_what_is_done(
    make_settings: Callable[..., Settings], procs: Processes
) -> None:
    # No broker URL: `kcap run` starts its own embedded Redis (append-only, under state_dir).
    # With threshold +1000 every caption fails the CLIP check.
    settings = make_settings(threshold=1000.0)
    assert settings.broker_url is None
    assert settings.input_dir is not None
    for i, image in enumerate(tiny_images(6, seed=11)):
        (settings.input_dir / f"b{i}.png").write_bytes(image_bytes(image))

    first = _run(settings, procs)
    assert first.returncode == 0, first.stdout
    found = records(settings)
    assert len(found["clip_failed"]) == 6 and not found["output"] and not found["errors"]
    stamps = {
        r["_path"]: json.loads(Path(str(r["_path"])).read_text())["routed_at"] for r in found["clip_failed"]
    }

    second = _run(settings, procs)
    assert second.returncode == 0, second.stdout
    again = records(settings)
    assert len(again["clip_failed"]) == 6
    assert {r["_path"]: r["routed_at"] for r in again["clip_failed"]} == stamps  # nothing redone


@pytest.mark.slow
def test_several_prompts_each_get_a_score_and_the_best_routes(
    make_settings: Callable[..., Settings], procs: Processes
) -> None:
    settings = make_settings(
        threshold=-1000.0, prompt="brief\ndetailed", caption_prefix="kcap, ", caption_ext=".caption"
    )
    assert settings.input_dir is not None and settings.output_dir is not None
    for i, image in enumerate(tiny_images(3, seed=17)):
        (settings.input_dir / f"p{i}.png").write_bytes(image_bytes(image))
    run = _run(settings, procs)
    assert run.returncode == 0, run.stdout
    found = records(settings)["output"]
    assert len(found) == 3
    for record in found:
        captions = record["captions"]
        assert isinstance(captions, list) and len(captions) == 2
        assert [c["prompt"] for c in captions] == settings.prompts
        best = max(captions, key=lambda c: c["clip_score"])
        assert record["clip_score"] == best["clip_score"]
        assert record["caption"] == best["caption"]
        assert record["text"] == "kcap, " + str(best["caption"])
        sidecar = Path(str(record["_path"])).with_suffix(".caption")
        assert sidecar.read_text().strip() == record["text"]
    metadata = (settings.output_dir / "metadata.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["file_name"] for line in metadata) == ["p0.png", "p1.png", "p2.png"]
