"""Writing output shards locally: what webdataset and datasets read back, and what a failure leaves."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shared.core.errors import ShardWriteError
from shared.shards.reading import read_samples
from shared.shards.rows import CAPTIONS_SCHEMA, COLUMN_NAMES
from shared.shards.sources import list_shards
from shared.shards.sweeping import sweep_temporaries
from shared.shards.writing import CaptionsParquetWriter, TarShardWriter
from tests.shard_makers import image_bytes


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _row(key: str, **values: object) -> dict[str, object]:
    return {
        "key": key,
        "source_shard": "s3://b/in/00000.tar",
        "member": f"{key}.png",
        "outcome": "output",
        **values,
    }


def write_tar(path: Path, n: int) -> list[bytes]:
    images = image_bytes(n)
    with TarShardWriter(str(path)) as writer:
        for i, data in enumerate(images):
            writer.add(
                f"k{i:03d}", "png", data, f"a caption {i}", {"clip_score": 20.0 + i, "key": f"k{i:03d}"}
            )
        assert writer.count == n
        assert writer.commit() == str(path)
    return images


# webdataset's url opener never closes the shard file it opened (a ResourceWarning at gc); the
# leak is webdataset's, not kcap's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_tar_shard_reads_back_with_webdataset(tmp_path: Path) -> None:
    import webdataset

    images = write_tar(tmp_path / "out" / "00000.tar", 3)
    assert _files(tmp_path / "out") == ["00000.tar"]
    read = list(webdataset.WebDataset(str(tmp_path / "out" / "00000.tar"), shardshuffle=False))
    gc.collect()  # the leaked file's warning is raised here, inside this test
    assert [s["__key__"] for s in read] == ["k000", "k001", "k002"]
    assert [s["png"] for s in read] == images
    assert [s["txt"].decode() for s in read] == ["a caption 0", "a caption 1", "a caption 2"]
    assert json.loads(read[1]["json"]) == {"clip_score": 21.0, "key": "k001"}


def test_a_tar_shard_reads_back_with_datasets_and_with_kcaps_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    images = write_tar(tmp_path / "out" / "00000.tar", 4)
    loaded = datasets.load_dataset("webdataset", data_files=str(tmp_path / "out" / "*.tar"), split="train")
    assert loaded["__key__"] == ["k000", "k001", "k002", "k003"]
    assert loaded["txt"] == [f"a caption {i}" for i in range(4)]
    assert [row["png"].size for row in loaded] == [(16, 12)] * 4
    (ref,) = list_shards(str(tmp_path / "out"))
    samples = list(read_samples(ref, max_image_bytes=10**6))
    assert [s.image for s in samples] == images and all(s.ok for s in samples)


def test_an_exception_inside_the_writer_leaves_no_file_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), TarShardWriter(str(out / "00000.tar")) as writer:
        writer.add("a", "png", b"x" * 100_000, "text", {})
        raise RuntimeError("boom")
    assert _files(out) == []


def test_a_block_that_forgets_to_commit_leaves_nothing(tmp_path: Path) -> None:
    with CaptionsParquetWriter(str(tmp_path / "00000.parquet")) as writer:
        writer.add(_row("a"))
    assert _files(tmp_path) == []


def test_a_failed_rewrite_leaves_the_old_shard_whole_and_a_commit_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "00000.tar"
    write_tar(path, 2)
    before = path.read_bytes()
    with pytest.raises(RuntimeError), TarShardWriter(str(path)) as writer:
        writer.add("z", "png", b"new", "t", {})
        raise RuntimeError("killed mid-shard")
    assert path.read_bytes() == before and _files(tmp_path) == ["00000.tar"]
    write_tar(path, 3)
    assert path.read_bytes() != before and _files(tmp_path) == ["00000.tar"]


def test_the_temporary_sits_beside_the_target_under_kcaps_temp_name(tmp_path: Path) -> None:
    writer = TarShardWriter(str(tmp_path / "00000.tar"))
    writer.add("a", "png", b"x", "t", {})
    (temp,) = os.listdir(tmp_path)
    assert temp.startswith(".kcap-tmp-") and temp.endswith("-00000.tar")
    writer.abort()
    writer.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("key", "ext", "why"),
    [
        ("a.b", "png", "contains a dot"),
        ("", "png", "the key is empty"),
        ("a", "PNG", "not lowercase letters and digits"),
        ("a", "txt", "the caption's or the record's"),
        ("dup", "png", "already in this shard"),
    ],
)
def test_a_key_the_format_cannot_hold_is_refused_at_add(tmp_path: Path, key: str, ext: str, why: str) -> None:
    with TarShardWriter(str(tmp_path / "a.tar")) as writer:
        writer.add("dup", "png", b"x", "t", {})
        with pytest.raises(ShardWriteError, match=why):
            writer.add(key, ext, b"x", "t", {})
        assert writer.count == 1


def test_a_committed_writer_refuses_more_work(tmp_path: Path) -> None:
    writer = TarShardWriter(str(tmp_path / "a.tar"))
    writer.commit()
    with pytest.raises(ShardWriteError, match="already committed or aborted"):
        writer.add("a", "png", b"x", "t", {})
    with pytest.raises(ShardWriteError, match="already committed or aborted"):
        writer.commit()
    assert _files(tmp_path) == ["a.tar"]


def test_captions_parquet_has_the_fixed_schema_and_loads_with_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path = tmp_path / "captions" / "00000.parquet"
    with CaptionsParquetWriter(str(path), rows_per_group=2) as writer:
        writer.add(_row("a", caption="a cat", clip_score=21.5, width=16, height=12, entities="[]"))
        writer.add(_row("b", outcome="clip_failed", clip_score=3.0))
        writer.add(_row("c", outcome="errors", error_reason="not an image", error_class="BadImageError"))
        writer.commit()
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.remove_metadata() == CAPTIONS_SCHEMA.remove_metadata()
    assert parquet.metadata.num_row_groups == 2  # rows are written a group at a time
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert loaded.column_names == list(COLUMN_NAMES)
    assert loaded["outcome"] == ["output", "clip_failed", "errors"]
    assert loaded["clip_score"] == [21.5, 3.0, None] and loaded["width"] == [16, None, None]
    assert loaded["error_reason"] == [None, None, "not an image"]


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (_row("a", colour="red"), r"unknown columns \['colour'\]"),
        (_row("a", outcome="maybe"), "outcome 'maybe' is not one of"),
        ({"key": "a", "outcome": "output"}, r"missing required columns \['member', 'source_shard'\]"),
        (_row("a", width="wide"), "width='wide' is not a int32"),
        (_row("a", width=2**40), r"width=1099511627776 is not a int32"),
        (_row("a", clip_score="high"), "clip_score='high' is not a double"),
        (_row("a", clip_score=True), "clip_score=True is not a double"),
        (_row("a", caption=b"bytes"), "caption=b'bytes' is not a string"),
    ],
)
def test_a_row_that_does_not_fit_is_refused_at_add(tmp_path: Path, row: dict[str, object], why: str) -> None:
    with CaptionsParquetWriter(str(tmp_path / "a.parquet")) as writer:
        with pytest.raises(ShardWriteError, match=why):
            writer.add(row)
        writer.add(_row("ok"))
        writer.commit()
    assert pq.read_table(tmp_path / "a.parquet").column("key").to_pylist() == ["ok"]


def test_a_sweep_takes_old_temporaries_and_leaves_young_ones_and_outputs(tmp_path: Path) -> None:
    write_tar(tmp_path / "00000.tar", 1)
    old = tmp_path / ".kcap-tmp-0a0a-00001.tar"
    old.write_bytes(b"left by a killed writer")
    os.utime(old, (1, 1))
    young = TarShardWriter(str(tmp_path / "00002.tar"))
    young.add("a", "png", b"x", "t", {})
    removed = sweep_temporaries(str(tmp_path), older_than_s=600)
    assert removed == [str(old)]
    young.commit()
    assert _files(tmp_path) == ["00000.tar", "00002.tar"]
