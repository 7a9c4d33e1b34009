"""Dataset mode under faults and against the hot folder, on real parts: a caption worker
SIGKILLed mid-shard (its retry overwrites the same names; every key once), and parity: the
same images through `kcap run --input-dir` and through shards get the same caption, entities,
score and outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.broker import redis_client
from shared.core.settings import Settings
from shared.core.shard_board import ShardBoard, ShardState
from tests.conftest import Processes, wait_for
from tests.integration.helpers import children, records
from tests.integration.shard_helpers import (
    markers,
    read_parquets,
    read_tars,
    run_shards,
    shard_args,
    shard_settings,
    tiny_pngs,
    write_tar_shard,
)
from tests.s3_server import S3Storage


def _worker_process(root: int) -> int | None:
    """The pid of the caption worker process under a `kcap run` (run > kcap worker > it)."""
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker-process" in argv:
            return pid
        stack.extend(children(pid))
    return None


def _kill_mid_shard(
    procs: Processes, settings: Settings, args: list[str], *, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `kcap run args`, SIGKILL its caption worker once the shard is under way, and
    wait for the run to end (its supervisor starts a new worker)."""
    process = procs.kcap("run", *args, settings=shard_settings(settings), extra_env=extra_env)
    state = settings.state_dir
    wait_for(
        lambda: (state / "broker_url").exists(), timeout_s=60, what="the embedded Redis", logs=procs.tail
    )
    client = redis_client((state / "broker_url").read_text().strip(), decode_responses=True)
    board = ShardBoard(client, settings.keys)

    def running_with_samples() -> bool:
        entries = list(board.entries().values())
        return bool(entries) and entries[0].state is ShardState.RUNNING and entries[0].samples > 0

    try:
        wait_for(running_with_samples, timeout_s=120, what="the shard under way", logs=procs.tail)
        victim = _worker_process(process.pid)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        process.wait(timeout=240)
    finally:
        board.close()
    return process


# Few rows and long captions: a shard of 120 takes long enough to be killed in the middle.
SLOW_SHARD = {"visibility_timeout_s": 6, "decoder_slots": 2, "batch_size": 2, "max_new_tokens": 24}


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_replaced_and_the_shard_redone_once(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    pngs = tiny_pngs(120, seed=8)
    write_tar_shard(tmp_path / "in" / "big.tar", [(f"k{i:03d}", {"png": b}) for i, b in enumerate(pngs)])
    settings = make_settings(**SLOW_SHARD)
    process = _kill_mid_shard(procs, settings, shard_args(str(tmp_path / "in"), tmp_path))
    assert process.returncode == 0, procs.tail()
    # The new worker took the shard once its lease ran out, and threw the dead one's
    # half-written temporaries away before writing the same names again.
    worker_log = (settings.state_dir / "logs" / "worker.log").read_text()
    assert "left by a worker that died" in worker_log, procs.tail()
    keys = [f"k{i:03d}" for i in range(120)]
    assert sorted(read_tars(tmp_path / "output")) == keys  # each key once, nothing partial
    rows = read_parquets(tmp_path / "captions")
    assert sorted(row["key"] for row in rows) == keys
    done = markers(tmp_path / "captions")
    assert done["big"]["counts"] == {"output": 120}


@pytest.mark.slow
def test_a_worker_killed_mid_upload_to_s3_leaves_nothing_partial_and_each_key_once(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path, s3_storage: S3Storage
) -> None:
    pngs = tiny_pngs(120, seed=8)
    local = write_tar_shard(
        tmp_path / "in" / "big.tar", [(f"k{i:03d}", {"png": b}) for i, b in enumerate(pngs)]
    )
    fs = s3_storage.filesystem()
    fs.put_file(str(local), s3_storage.url("in", "big.tar"))
    args = shard_args(s3_storage.url("in", "big.tar"), tmp_path)
    args += ["--output-dir", s3_storage.url("out"), "--clip-failed-dir", s3_storage.url("failed")]
    args += ["--captions-dir", s3_storage.url("captions")]
    process = _kill_mid_shard(procs, make_settings(**SLOW_SHARD), args, extra_env=s3_storage.env)
    assert process.returncode == 0, procs.tail()
    fs.invalidate_cache()
    objects = sorted(key.split("/", 1)[1] for key in fs.find(s3_storage.bucket))
    assert [o for o in objects if not o.startswith("in/")] == [
        "captions/_done/big.json",
        "captions/big.parquet",
        "failed/big.tar",
        "out/big.tar",
    ]  # nothing under _tmp/, nothing partial under a final name
    (tmp_path / "got").mkdir()
    fs.get_file(s3_storage.url("out", "big.tar"), str(tmp_path / "got" / "big.tar"))
    assert sorted(read_tars(tmp_path / "got")) == [f"k{i:03d}" for i in range(120)]


@pytest.mark.slow
def test_the_hot_folder_and_shards_give_the_same_captions_scores_and_outcomes(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    pngs = tiny_pngs(8, seed=13)
    settings = make_settings(threshold=None)  # the default threshold: some fail, some pass
    assert settings.input_dir is not None
    for i, data in enumerate(pngs):
        (settings.input_dir / f"k{i:03d}.png").write_bytes(data)
    hot = procs.kcap("run", settings=settings)
    hot.wait(timeout=180)
    assert hot.returncode == 0, procs.tail()
    by_key = {
        Path(str(r["source"])).stem: r
        for group in ("output", "clip_failed")
        for r in records(settings)[group]
    }
    assert len(by_key) == 8

    write_tar_shard(tmp_path / "in" / "same.tar", [(f"k{i:03d}", {"png": b}) for i, b in enumerate(pngs)])
    shards = run_shards(
        procs, settings.replace(state_dir=tmp_path / "state2"), str(tmp_path / "in"), tmp_path / "ds"
    )
    assert shards.returncode == 0, shards.stdout
    filed = {**read_tars(tmp_path / "ds" / "output"), **read_tars(tmp_path / "ds" / "clip_failed")}
    assert sorted(filed) == sorted(by_key)
    for key, sample in filed.items():
        record, hot_record = json.loads(sample["json"]), by_key[key]
        for field in (
            "caption",
            "text",
            "entities",
            "outcome",
            "threshold",
            "clip_score_method",
            "width",
            "height",
        ):
            assert record[field] == hot_record[field], (key, field)
        # Batched with other images either way: float32 rounding over CLIP's dot products.
        assert record["clip_score"] == pytest.approx(hot_record["clip_score"], rel=1e-5)
        assert set(record) >= set(hot_record) - {"source_size", "source_mtime_ns", "_path"}


@pytest.mark.slow
def test_a_shard_longer_than_the_visibility_timeout_is_done_once(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    pngs = tiny_pngs(240, seed=9)
    write_tar_shard(tmp_path / "in" / "long.tar", [(f"k{i:03d}", {"png": b}) for i, b in enumerate(pngs)])
    # Redis would hand a message held 3 s to another delivery; this shard takes far longer.
    settings = make_settings(visibility_timeout_s=3, decoder_slots=1, batch_size=1, max_new_tokens=32)
    result = run_shards(procs, settings, str(tmp_path / "in"), tmp_path)
    assert result.returncode == 0, result.stdout
    worker_log = (settings.state_dir / "logs" / "worker.log").read_text()
    finished = [line for line in worker_log.splitlines() if "shard long: " in line]
    assert len(finished) == 1, finished  # one delivery did it; none waited for it or redid it
    assert "delivered again" not in worker_log and "left by a worker that died" not in worker_log
    took_s = float(finished[0].rsplit(" in ", 1)[1].rstrip("s"))
    assert took_s > 2 * settings.visibility_timeout_s, took_s  # it did outlast the timeout
    assert sorted(read_tars(tmp_path / "output")) == [f"k{i:03d}" for i in range(240)]
