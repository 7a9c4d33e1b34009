"""Shards on S3: s3fs against moto's ThreadedMotoServer, one bucket per test (tests/s3_server.py).

The S3 API as s3fs's own suite tests it; AWS, MinIO, R2 (and GCS through gcsfs) take the same
fsspec path. Shown here: listing and reading shards in a bucket, writers that never leave a
partial object under a final name (an exception, a kill mid-upload), markers across processes,
and one clear sentence for a store that is not there.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from shared.core.embedded_redis import free_port
from shared.core.errors import ShardSourceError, ShardWriteError
from shared.shards.markers import Decision, DoneMarker, decide, read_markers, write_marker
from shared.shards.reading import count_samples, read_samples
from shared.shards.sources import list_shards
from shared.shards.staging import check_writable
from shared.shards.sweeping import sweep_temporaries
from shared.shards.writing import CaptionsParquetWriter, TarShardWriter
from tests.conftest import REPO, wait_for
from tests.s3_server import S3Storage
from tests.shard_makers import image_bytes, image_samples, only_ref, plain_parquet, read_all, wds_tar

MiB = 1024 * 1024


def _upload(s3: S3Storage, local: Path, *parts: str) -> str:
    url = s3.url(*parts)
    s3.filesystem().put_file(str(local), url)
    return url


def _keys(s3: S3Storage) -> list[str]:
    fs = s3.filesystem()
    fs.invalidate_cache()
    return sorted(path.split("/", 1)[1] for path in fs.find(s3.bucket))


def _multipart_uploads(s3: S3Storage) -> list[Any]:
    answer = s3.filesystem().call_s3("list_multipart_uploads", Bucket=s3.bucket)
    return list(answer.get("Uploads", []))


def test_shards_in_a_bucket_list_and_read_like_local_ones(s3_storage: S3Storage, tmp_path: Path) -> None:
    made = {i: image_samples(3, seed=i, prefix=f"s{i}-") for i in range(3)}
    for i, samples in made.items():
        _upload(s3_storage, wds_tar(tmp_path / f"{i:05d}.tar", samples), "in", f"{i:05d}.tar")
    _upload(s3_storage, plain_parquet(tmp_path / "p.parquet", {"image": image_bytes(4)}), "in", "p.parquet")
    options = s3_storage.storage_options
    refs = list_shards(s3_storage.url("in"), storage_options=options)
    assert [(r.name, r.kind) for r in refs] == [
        ("00000", "tar"),
        ("00001", "tar"),
        ("00002", "tar"),
        ("p", "parquet"),
    ]
    assert (
        refs[1].url == s3_storage.url("in", "00001.tar")
        and refs[1].size == (tmp_path / "00001.tar").stat().st_size
    )
    globbed = list_shards(s3_storage.url("in", "*.tar"), storage_options=options)
    assert [r.name for r in globbed] == ["00000", "00001", "00002"]
    braced = list_shards(s3_storage.url("in", "{00002..00001}.tar"), storage_options=options)
    assert [r.name for r in braced] == ["00002", "00001"]
    samples = list(read_samples(refs[1], max_image_bytes=10**6, storage_options=options, start=1))
    assert [(s.key, s.image) for s in samples] == [(m["__key__"], m["png"]) for m in made[1][1:]]
    assert count_samples(refs[3], storage_options=options) == 4
    assert len(read_all(refs[3].url, storage_options=options)) == 4


# webdataset's url opener never closes the shard file it opened (a ResourceWarning at gc); the
# leak is webdataset's, not kcap's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_written_shards_appear_whole_under_their_final_names_and_load_from_the_bucket(
    s3_storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    import webdataset

    options = s3_storage.storage_options
    images = image_bytes(3)
    with TarShardWriter(s3_storage.url("out", "00000.tar"), storage_options=options) as tar:
        for i, data in enumerate(images):
            tar.add(f"k{i}", "png", data, f"caption {i}", {"i": i})
        assert tar.commit() == s3_storage.url("out", "00000.tar")
    rows = [
        {"key": f"k{i}", "source_shard": "s3://in/0.tar", "member": f"k{i}.png", "outcome": "output"}
        for i in range(3)
    ]
    with CaptionsParquetWriter(
        s3_storage.url("captions", "00000.parquet"), storage_options=options
    ) as captions:
        for row in rows:
            captions.add(row)
        captions.commit()
    assert _keys(s3_storage) == ["captions/00000.parquet", "out/00000.tar"]  # nothing left under _tmp/

    # Consumers: kcap's own reader from the bucket, webdataset on the downloaded shard, and
    # datasets reading the captions straight from the bucket.
    assert [s.image for s in read_all(s3_storage.url("out", "00000.tar"), storage_options=options)] == images
    s3_storage.filesystem().get_file(s3_storage.url("out", "00000.tar"), str(tmp_path / "00000.tar"))
    read = list(webdataset.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False))
    gc.collect()  # webdataset leaves the shard file open: its warning is raised here
    assert [s["__key__"] for s in read] == ["k0", "k1", "k2"] and json.loads(read[2]["json"]) == {"i": 2}
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = datasets.load_dataset(
        "parquet", data_files=s3_storage.url("captions", "*.parquet"), storage_options=options, split="train"
    )
    assert loaded["key"] == ["k0", "k1", "k2"]


def test_an_exception_mid_upload_leaves_no_final_object_where_a_plain_s3fs_write_would(
    s3_storage: S3Storage,
) -> None:
    # Small blocks, so 6 MiB is a multipart upload in progress when the exception comes.
    options = {**s3_storage.storage_options, "default_block_size": 5 * MiB}
    final = s3_storage.url("out", "00000.tar")
    with (
        pytest.raises(RuntimeError, match="worker died"),
        TarShardWriter(final, storage_options=options) as tar,
    ):
        tar.add("big", "png", os.urandom(6 * MiB), "t", {})
        assert _multipart_uploads(s3_storage), "the test must interrupt a multipart upload"
        raise RuntimeError("worker died mid-shard")
    assert _keys(s3_storage) == [] and _multipart_uploads(s3_storage) == []

    # The hole this closes: s3fs's own with-block completes the upload from __exit__.
    fs = s3_storage.filesystem()
    with pytest.raises(RuntimeError), fs.open(s3_storage.url("naive.tar"), "wb") as handle:
        handle.write(b"half a shard")
        raise RuntimeError("worker died mid-shard")
    assert _keys(s3_storage) == ["naive.tar"]


_KILLED_WRITER = """
import json, sys, time, os
from shared.shards.writing import TarShardWriter
options, final, flag = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
tar = TarShardWriter(final, storage_options=options)
tar.add("a", "png", os.urandom(6 * 1024 * 1024), "t", {})
tar.add("b", "png", os.urandom(6 * 1024 * 1024), "t", {})
open(flag, "w").close()
time.sleep(60)
"""


def test_a_writer_killed_mid_upload_leaves_the_old_shard_whole(s3_storage: S3Storage, tmp_path: Path) -> None:
    options = {**s3_storage.storage_options, "default_block_size": 5 * MiB}
    final = s3_storage.url("out", "00000.tar")
    fs = s3_storage.filesystem()
    fs.pipe(final, b"the previous, complete shard")
    flag = tmp_path / "uploading"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, json.dumps(options), final, str(flag)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        wait_for(flag.exists, timeout_s=60, what="the writer to be mid-upload")
        assert _multipart_uploads(s3_storage), "the kill must land during a multipart upload"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    fs.invalidate_cache()
    assert fs.cat(final) == b"the previous, complete shard"
    assert _keys(s3_storage) == ["out/00000.tar"]  # the upload in flight is invisible: no object


def test_markers_written_by_another_process_are_seen_by_the_next_listing(s3_storage: S3Storage) -> None:
    options = s3_storage.storage_options
    captions = s3_storage.url("captions")
    assert read_markers(captions, storage_options=options) == {}
    write_marker(captions, DoneMarker("00000", "h1", {"output": 3}), storage_options=options)
    first = read_markers(captions, storage_options=options)
    assert list(first) == ["00000"] and decide("00000", first, "h1").action is Decision.SKIP
    # Another worker (its own filesystem object, as in another process) finishes a shard: this
    # process's cached listing must not hide it.
    import s3fs

    other = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    other.pipe(
        f"{s3_storage.bucket}/captions/_done/00001.json", DoneMarker("00001", "h2", {"errors": 1}).encode()
    )
    second = read_markers(captions, storage_options=options)
    assert sorted(second) == ["00000", "00001"] and decide("00001", second, "h1").action is Decision.REFUSE
    assert _keys(s3_storage) == ["captions/_done/00000.json", "captions/_done/00001.json"]


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_a_shard_that_vanishes_mid_read_stops_the_job_instead_of_faking_a_truncation(
    s3_storage: S3Storage, tmp_path: Path, kind: str
) -> None:
    images = [os.urandom(200_000) for _ in range(10)]
    if kind == "tar":
        local = wds_tar(
            tmp_path / "a.tar", [{"__key__": f"k{i}", "png": data} for i, data in enumerate(images)]
        )
    else:
        local = plain_parquet(tmp_path / "a.parquet", {"image": images}, row_group_size=2)
    url = _upload(s3_storage, local, "in", local.name)
    options = {**s3_storage.storage_options, "default_block_size": 256 * 1024}
    ref = only_ref(url, storage_options=options)
    reader = read_samples(ref, max_image_bytes=10**6, storage_options=options)
    assert next(reader).ok
    s3_storage.filesystem().rm(url)
    with pytest.raises(
        ShardSourceError, match=rf"reading s3://.*/in/a\.{kind} failed at sample \d+ .*retry it"
    ):
        list(reader)


def test_a_store_that_is_not_there_and_a_pattern_that_matches_nothing_say_so(s3_storage: S3Storage) -> None:
    options = s3_storage.storage_options
    with pytest.raises(
        ShardSourceError, match=r"^no \.tar or \.parquet shard matches s3://.*/in/\*\.tar: check"
    ):
        list_shards(s3_storage.url("in", "*.tar"), storage_options=options)
    with pytest.raises(ShardSourceError, match=r"the bucket 'kcap-no-such-bucket' does not exist"):
        list_shards("s3://kcap-no-such-bucket/in/*.tar", storage_options=options)
    closed = {
        **options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    started = time.monotonic()
    with pytest.raises(
        ShardSourceError, match=r"^cannot reach the store behind s3://.*: check the endpoint"
    ) as caught:
        list_shards(s3_storage.url("in", "*.tar"), storage_options=closed)
    assert "\n" not in str(caught.value) and time.monotonic() - started < 30


def test_a_destination_is_tried_once_before_a_run_and_left_as_it_was(
    s3_storage: S3Storage, tmp_path: Path
) -> None:
    options = s3_storage.storage_options
    check_writable(s3_storage.url("out"), storage_options=options)
    assert _keys(s3_storage) == []  # the trial object is gone again
    with pytest.raises(
        ShardWriteError, match=r"^cannot write to s3://kcap-no-such-bucket/out \(.*\): check that"
    ):
        check_writable("s3://kcap-no-such-bucket/out", storage_options=options)
    local = tmp_path / "made" / "here"
    check_writable(str(local))
    assert local.is_dir() and not list(local.iterdir())
    (tmp_path / "a-file").write_bytes(b"x")
    with pytest.raises(
        ShardWriteError, match=r"cannot write to .*a-file/out \((NotADirectoryError|FileExistsError)"
    ):
        check_writable(str(tmp_path / "a-file" / "out"))


def test_captions_rows_written_to_s3_keep_the_schema(s3_storage: S3Storage) -> None:
    options = s3_storage.storage_options
    url = s3_storage.url("captions", "x.parquet")
    with CaptionsParquetWriter(url, storage_options=options, rows_per_group=1) as writer:
        for key in ("a", "b"):
            writer.add(
                {"key": key, "source_shard": "s", "member": "m", "outcome": "errors", "error_reason": "r"}
            )
        writer.commit()
    with s3_storage.filesystem().open(url, "rb") as handle:
        table = pq.read_table(handle)
    assert table.column("error_reason").to_pylist() == ["r", "r"] and table.num_rows == 2


def test_a_sweep_removes_abandoned_temporaries_and_uploads_never_outputs(s3_storage: S3Storage) -> None:
    options = {**s3_storage.storage_options, "default_block_size": 5 * MiB}
    fs = s3_storage.filesystem()
    fs.pipe(s3_storage.url("out", "00000.tar"), b"a committed shard")
    fs.pipe(s3_storage.url("out", "_tmp", "dead-00001.tar"), b"uploaded, never copied: its writer was killed")
    # A writer may be at work right now: no young temporary is touched.
    assert sweep_temporaries(s3_storage.url("out"), older_than_s=3600, storage_options=options) == []
    assert _keys(s3_storage) == ["out/00000.tar", "out/_tmp/dead-00001.tar"]
    stalled = TarShardWriter(s3_storage.url("out", "00002.tar"), storage_options=options)
    try:
        stalled.add("big", "png", os.urandom(6 * MiB), "t", {})
        assert len(_multipart_uploads(s3_storage)) == 1
        # (moto dates every multipart upload 2010-11-10, so its age cannot be shown here.)
        removed = sweep_temporaries(s3_storage.url("out"), older_than_s=-60, storage_options=options)
        temp_key = stalled._staged.temp.split("/", 1)[1]
        assert set(removed) == {
            f"upload:{s3_storage.bucket}/{temp_key}",
            s3_storage.url("out", "_tmp", "dead-00001.tar"),
        }
        assert _keys(s3_storage) == ["out/00000.tar"] and _multipart_uploads(s3_storage) == []
    finally:
        stalled.abort()  # its upload is already gone: aborting still ends cleanly
    assert _keys(s3_storage) == ["out/00000.tar"]


def test_a_child_process_finds_the_store_through_the_aws_environment_alone(s3_storage: S3Storage) -> None:
    # How workers on other hosts are configured: no storage options, only the usual variables.
    s3_storage.filesystem().pipe(s3_storage.url("in", "00000.tar"), b"not read here")
    code = "import sys; from shared.shards.sources import list_shards; print(list_shards(sys.argv[1])[0].url)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-c", code, s3_storage.url("in")],
        env={**env, **s3_storage.env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == s3_storage.url("in", "00000.tar")
