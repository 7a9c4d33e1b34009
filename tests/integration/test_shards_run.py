"""Dataset mode end to end on real parts: `kcap run --input-shards` as a process, its embedded
redis-server, real caption worker processes on tiny models; shards made with webdataset's
writer and `datasets`, outputs read back with `webdataset.WebDataset` and `datasets`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.settings import Settings
from tests.conftest import Processes
from tests.integration.shard_helpers import (
    append_raw_member,
    markers,
    read_parquets,
    read_tars,
    run_shards,
    tiny_pngs,
    write_parquet_shard,
    write_tar_shard,
)


def _faulty_shards(root: Path) -> tuple[dict[str, bytes], set[str]]:
    """Three tar shards with a bad member, a repeated key and a truncated end; (the good
    keys' images, keys that must be error rows)."""
    pngs = tiny_pngs(13, seed=21)
    # s0: five images and a member that is not an image.
    samples = [(f"s0-{i:03d}", {"png": pngs[i], "txt": b"an old caption"}) for i in range(5)]
    samples.append(("s0-bad", {"jpg": b"this is not a JPEG at all"}))
    write_tar_shard(root / "s0.tar", samples)
    good = {f"s0-{i:03d}": pngs[i] for i in range(5)}
    # s1: four images, then the first key again, further on (a careless re-pack).
    write_tar_shard(root / "s1.tar", [(f"s1-{i:03d}", {"png": pngs[5 + i]}) for i in range(4)])
    append_raw_member(root / "s1.tar", "s1-000.png", pngs[12])
    good.update({f"s1-{i:03d}": pngs[5 + i] for i in range(4)})
    # s2: four images, the file cut off inside its third image.
    path = write_tar_shard(root / "s2.tar", [(f"s2-{i:03d}", {"png": pngs[9 + i]}) for i in range(4)])
    data = path.read_bytes()
    third = data.index(b"s2-002.png")
    path.write_bytes(data[: third + 512 + 100])
    good.update({"s2-000": pngs[9], "s2-001": pngs[10]})
    return good, {"s0-bad"}


def test_tar_shards_end_to_end_with_faults_then_a_rerun_skips_and_other_settings_are_refused(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    import datasets

    good, bad = _faulty_shards(tmp_path / "shards")
    settings = make_settings(threshold=-1000.0)
    pattern = str(tmp_path / "shards" / "*.tar")
    first = run_shards(procs, settings, pattern, tmp_path)
    assert first.returncode == 0, first.stdout

    out, failed, captions = tmp_path / "output", tmp_path / "clip_failed", tmp_path / "captions"
    output = read_tars(out)
    assert set(output) == set(good) and not read_tars(failed)
    for key, sample in output.items():
        record = json.loads(sample["json"])
        assert record["outcome"] == "output" and record["key"] == key
        assert sample["txt"].decode() == record["text"] == record["caption"]
        assert record["caption_model"] == settings.caption_model and record["decoder"] == "kcap-static"
        assert record["clip_score"] is not None and record["threshold"] == -1000.0
        assert sample["png"] == good[key]  # the original bytes, as they were
    rows = read_parquets(captions)
    # Every sample once: s0's six, s1's four and its repeated key, s2's two whole ones and
    # one row for where it breaks off.
    assert len(rows) == 6 + 5 + 3
    captioned = sorted(row["key"] for row in rows if row["outcome"] == "output")
    assert captioned == sorted(good)
    errors = [row for row in rows if row["outcome"] == "errors"]
    assert all(row["error_reason"] and not row["caption"] for row in errors)
    by_shard = {Path(row["source_shard"]).stem: row["key"] for row in errors}
    assert by_shard["s0"] in bad and by_shard["s1"] == "s1-000" and by_shard["s2"].startswith("_truncated")
    # The consumers read the outputs as they are.
    loaded = datasets.load_dataset(
        "webdataset", data_files=sorted(map(str, out.glob("*.tar"))), split="train"
    )
    assert sorted(row["__key__"] for row in loaded) == sorted(good)
    done = markers(captions)
    assert set(done) == {"s0", "s1", "s2"}
    assert sum(sum(m["counts"].values()) for m in done.values()) == len(rows)

    # A rerun with the same settings skips every shard: nothing is redone.
    again = run_shards(procs, settings, pattern, tmp_path)
    assert again.returncode == 0, again.stdout
    assert markers(captions) == done

    # Other settings are refused with what to do...
    changed = make_settings(threshold=1000.0)
    refused = run_shards(procs, changed, pattern, tmp_path)
    assert refused.returncode == 2 and "--overwrite" in refused.stdout
    assert markers(captions) == done


@pytest.mark.slow
def test_overwrite_redoes_shards_under_the_same_names(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    good, _bad = _faulty_shards(tmp_path / "shards")
    pattern = str(tmp_path / "shards" / "*.tar")
    first = run_shards(procs, make_settings(threshold=-1000.0), pattern, tmp_path)
    assert first.returncode == 0, first.stdout
    out, failed, captions = tmp_path / "output", tmp_path / "clip_failed", tmp_path / "captions"
    rows = read_parquets(captions)
    assert set(read_tars(out)) == set(good)
    changed = make_settings(threshold=1000.0)
    # Done again under the same names with --overwrite: now every caption fails the
    # threshold, and each key is in exactly one of output/ and clip_failed/.
    over = run_shards(procs, changed, pattern, tmp_path, "--overwrite")
    assert over.returncode == 0, over.stdout
    assert not read_tars(out) and set(read_tars(failed)) == set(good)
    assert len(read_parquets(captions)) == len(rows)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".kcap-tmp")]


@pytest.mark.slow
def test_parquet_in_chunks_with_captions_only(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    pngs = tiny_pngs(10, seed=5)
    keys = [f"p{i:02d}" for i in range(10)]
    write_parquet_shard(tmp_path / "in" / "part.parquet", keys, pngs)
    settings = make_settings()
    result = run_shards(
        procs, settings, str(tmp_path / "in"), tmp_path, "--chunk-size", "4", "--shard-output", "captions"
    )
    assert result.returncode == 0, result.stdout
    assert not (tmp_path / "output").exists() or not list((tmp_path / "output").glob("*.tar"))
    done = markers(tmp_path / "captions")
    assert set(done) == {"part-00000", "part-00001", "part-00002"}
    rows = read_parquets(tmp_path / "captions")
    assert sorted(row["key"] for row in rows) == keys
    assert all(row["outcome"] == "output" and row["caption"] for row in rows)


def test_a_pattern_that_matches_nothing_stops_at_start(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    result = run_shards(procs, make_settings(), str(tmp_path / "none" / "*.tar"), tmp_path, timeout_s=60)
    assert result.returncode == 2
    assert "kcap: error:" in result.stdout and "Traceback" not in result.stdout
    assert not (tmp_path / "captions" / "_done").exists()
    assert os.listdir(tmp_path)  # nothing else made


@pytest.mark.slow
def test_a_shard_that_cannot_be_put_in_place_fails_alone_and_the_run_says_so(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    pngs = tiny_pngs(4, seed=53)
    for n in range(2):
        write_tar_shard(
            tmp_path / "in" / f"{n:05d}.tar", [(f"p{n}-{i}", {"png": pngs[2 * n + i]}) for i in range(2)]
        )
    # The destination takes files (the start's write check passes), but a folder holds the
    # name of one output shard: that shard's commit fails on every try.
    (tmp_path / "output" / "00001.tar").mkdir(parents=True)
    # What writers killed long ago left is swept at the start; a temporary of today is not.
    old, fresh = (tmp_path / "output" / f".kcap-tmp-{n * 12}-gone" for n in "01")
    for temp in (old, fresh):
        temp.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    result = run_shards(procs, make_settings(threshold=-1000.0), str(tmp_path / "in"), tmp_path)
    assert result.returncode == 1, result.stdout
    assert "failed 1" in result.stdout and "run again to retry it" in result.stdout
    assert set(markers(tmp_path / "captions")) == {"00000"}  # the other shard is done
    assert set(read_tars(tmp_path / "output")) == {"p0-0", "p0-1"}
    failed = json.loads((tmp_path / "captions" / "_failed" / "00001.json").read_text())
    assert "00001.tar" in failed["reason"]
    temps = [p for p in (tmp_path / "output").iterdir() if p.name.startswith(".kcap-tmp-")]
    assert temps == [fresh]
