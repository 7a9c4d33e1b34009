"""`kcap run --input-shards` with every location on S3: s3fs against moto's ThreadedMotoServer
on loopback, a bucket per test (tests/s3_server.py). The caption workers reach the bucket
through the usual AWS_* environment alone, as workers on other hosts would; the outputs are
read back from the bucket with webdataset and `datasets`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.core.settings import Settings
from tests.conftest import Processes
from tests.integration.shard_helpers import read_parquets, read_tars, run_shards, tiny_pngs, write_tar_shard
from tests.s3_server import S3Storage


def _download(s3: S3Storage, prefix: str, dest: Path) -> list[str]:
    """Every object under s3://bucket/prefix into dest (flat); their names."""
    fs = s3.filesystem()
    fs.invalidate_cache()
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for key in fs.find(s3.url(prefix)):
        name = key.rsplit("/", 1)[-1]
        fs.get_file(key, str(dest / name))
        names.append(key.split("/", 1)[1])
    return sorted(names)


@pytest.mark.slow
def test_shards_in_a_bucket_come_out_in_the_bucket_and_a_missing_bucket_stops_the_run_at_start(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path, s3_storage: S3Storage
) -> None:
    pngs = tiny_pngs(6, seed=31)
    fs = s3_storage.filesystem()
    expected = set()
    for n in range(2):
        samples = [(f"b{n}-{i}", {"png": pngs[3 * n + i]}) for i in range(3)]
        expected |= {key for key, _ in samples}
        local = write_tar_shard(tmp_path / "made" / f"{n:05d}.tar", samples)
        fs.put_file(str(local), s3_storage.url("in", f"{n:05d}.tar"))
    settings = make_settings(threshold=-1000.0)

    done = run_shards(
        procs,
        settings,
        s3_storage.url("in", "{00000..00001}.tar"),
        tmp_path,  # unused: the locations below are the bucket's
        "--output-dir",
        s3_storage.url("out"),
        "--clip-failed-dir",
        s3_storage.url("failed"),
        "--captions-dir",
        s3_storage.url("captions"),
        extra_env=s3_storage.env,
    )
    assert done.returncode == 0, done.stdout
    objects = _download(s3_storage, "", tmp_path / "all")
    # The outputs and the markers under their final names; no temporary left under _tmp/.
    assert {name for name in objects if not name.startswith("in/")} == {
        "out/00000.tar",
        "out/00001.tar",
        "failed/00000.tar",
        "failed/00001.tar",
        "captions/00000.parquet",
        "captions/00001.parquet",
        "captions/_done/00000.json",
        "captions/_done/00001.json",
    }
    _download(s3_storage, "out", tmp_path / "out")
    _download(s3_storage, "captions", tmp_path / "captions")
    assert set(read_tars(tmp_path / "out")) == expected
    rows = read_parquets(tmp_path / "captions")
    assert sorted(row["key"] for row in rows) == sorted(expected)
    assert all(row["source_shard"].startswith(f"s3://{s3_storage.bucket}/in/") for row in rows)
    marker = json.loads((tmp_path / "captions" / "00000.json").read_text())
    assert marker["counts"] == {"output": 3}

    # A destination that is not there stops the run at its start, with a sentence naming it,
    # before a single shard is captioned for nothing.
    missing = f"s3://{s3_storage.bucket}-gone"
    failed = run_shards(
        procs,
        settings.replace(state_dir=tmp_path / "state2"),
        s3_storage.url("in", "*.tar"),
        tmp_path,
        "--output-dir",
        f"{missing}/out",
        "--captions-dir",
        f"{missing}/captions",
        "--clip-failed-dir",
        f"{missing}/failed",
        extra_env=s3_storage.env,
    )
    assert failed.returncode == 2, failed.stdout
    assert f"kcap: error: cannot write to {missing}/out" in failed.stdout
    assert "Traceback" not in failed.stdout
