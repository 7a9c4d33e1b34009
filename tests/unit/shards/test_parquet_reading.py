"""Reading Parquet shards made by `datasets` (Image struct) and pyarrow (plain bytes)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.core.errors import ShardSourceError
from shared.shards.reading import count_samples
from tests.shard_makers import hf_parquet, image_bytes, only_ref, plain_parquet, read_all


def test_a_datasets_image_column_reads_with_its_keys_and_text_columns(tmp_path: Path) -> None:
    images = image_bytes(4)
    rows = {
        "image": [{"bytes": data, "path": f"img{i}.png"} for i, data in enumerate(images)],
        "key": [f"k{i}" for i in range(4)],
        "caption": [f"old caption {i}" for i in range(4)],
    }
    path = hf_parquet(tmp_path / "a.parquet", rows)
    samples = read_all(path)
    assert [s.key for s in samples] == ["k0", "k1", "k2", "k3"]
    assert [s.image for s in samples] == images
    assert all(s.ok and s.image_ext == "png" and s.member == f"row {s.index}" for s in samples)
    assert samples[2].extra == {"caption": "old caption 2"}
    assert count_samples(only_ref(path)) == 4


def test_plain_binary_without_a_key_column_takes_row_keys_and_sniffs_the_format(tmp_path: Path) -> None:
    images = image_bytes(3, fmt="JPEG")
    path = plain_parquet(tmp_path / "a.parquet", {"jpg": images, "score": [1.5, 2.5, 3.5]})
    samples = read_all(path)
    assert [s.key for s in samples] == ["row-000000000", "row-000000001", "row-000000002"]
    assert all(s.ok and s.image_ext == "jpg" for s in samples)
    assert samples[1].extra == {"score": "2.5"}


@pytest.mark.parametrize("column", ["__key__", "id"])
def test_the_key_column_is_found_by_its_usual_names(tmp_path: Path, column: str) -> None:
    path = plain_parquet(tmp_path / "a.parquet", {"image": image_bytes(2), column: [7, 8]})
    assert [s.key for s in read_all(path)] == ["7", "8"]


def test_columns_can_be_named(tmp_path: Path) -> None:
    images = image_bytes(2)
    path = plain_parquet(tmp_path / "a.parquet", {"a": images, "b": images[::-1], "name": ["x", "y"]})
    samples = read_all(path, image_column="b", key_column="name")
    assert [(s.key, s.image) for s in samples] == [("x", images[1]), ("y", images[0])]


def test_no_image_column_or_a_wrong_name_stops_with_one_sentence(tmp_path: Path) -> None:
    path = plain_parquet(tmp_path / "a.parquet", {"text": ["a", "b"]})
    with pytest.raises(ShardSourceError, match=r"has no image column .* among text: it cannot be captioned"):
        read_all(path)
    path = plain_parquet(tmp_path / "b.parquet", {"image": image_bytes(1)})
    with pytest.raises(
        ShardSourceError, match=r"has no image column 'picture'.*pass the right --image-column"
    ):
        read_all(path, image_column="picture")
    with pytest.raises(ShardSourceError, match=r"has no key column 'name'"):
        read_all(path, key_column="name")


def test_bad_rows_are_error_samples_with_reasons(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    rows = {
        "image": [
            {"bytes": png, "path": "a.png"},
            {"bytes": None, "path": "/data/elsewhere.png"},
            None,
            {"bytes": b"z" * 5000, "path": "big.png"},
            {"bytes": png, "path": "dup.png"},
            {"bytes": png, "path": "dot.png"},
            {"bytes": b"not an image at all", "path": None},
        ],
        "key": ["a", "b", "c", "d", "a", "img.001", "e"],
    }
    # datasets would check the path-only row's file while writing: pyarrow writes the same struct.
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(rows["image"], type=image_type), "key": rows["key"]})
    pq.write_table(table, tmp_path / "a.parquet")
    samples = read_all(tmp_path / "a.parquet", max_image_bytes=1000)
    reasons = {s.key: s.error for s in samples if not s.ok}
    assert samples[0].ok and samples[6].ok and samples[6].image_ext == "bin"  # decoding is the worker's
    assert "only a path reference (/data/elsewhere.png)" in reasons["b"]
    assert "no image in the column 'image'" in reasons["c"]
    assert "5000 bytes, over the limit of 1000" in reasons["d"]
    assert "repeats in this shard (first at row 0)" in samples[4].error
    assert "contains a dot" in reasons["img.001"]
    assert all(s.image == b"" for s in samples if not s.ok)


def test_ranges_skip_whole_row_groups_and_still_catch_a_repeated_key(tmp_path: Path) -> None:
    images = image_bytes(10)
    keys = [f"k{i}" for i in range(9)] + ["k1"]
    path = plain_parquet(tmp_path / "a.parquet", {"image": images, "key": keys}, row_group_size=3)
    whole = read_all(path)
    assert [s.index for s in whole] == list(range(10))
    for start, stop in [(0, 3), (3, 7), (4, 5), (7, None), (9, 10), (10, None)]:
        assert read_all(path, start=start, stop=stop) == whole[start:stop]
    (late,) = read_all(path, start=9)
    assert "repeats in this shard (first at row 1)" in late.error


def test_a_cut_parquet_file_is_one_error_sample(tmp_path: Path) -> None:
    data = plain_parquet(tmp_path / "whole.parquet", {"image": image_bytes(4)}).read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.parquet").write_bytes(data[: len(data) // 2])
    (only,) = read_all(tmp_path / "cut" / "a.parquet")
    assert not only.ok and only.index == 0 and "cannot be read from sample 0 on" in only.error
    assert count_samples(only_ref(tmp_path / "cut" / "a.parquet")) is None
