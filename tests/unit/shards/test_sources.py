"""Listing shards on local disk: a file, a folder, a glob, a brace range; names; clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.errors import ShardSourceError
from shared.shards.refs import ShardRef
from shared.shards.sources import list_shards
from tests.shard_makers import image_bytes, image_samples, plain_parquet, wds_tar


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for i in range(3):
        wds_tar(root / f"{i:05d}.tar", image_samples(2, seed=i))
    plain_parquet(root / "extra.parquet", {"image": image_bytes(2)})
    # Never shards: kcap's temporaries, markers, uploads in flight, other files, sub-folders.
    (root / ".kcap-tmp-abc-00009.tar").write_bytes(b"partial")
    (root / "_done").mkdir()
    (root / "_done" / "00000.json").write_text("{}")
    (root / "notes.txt").write_text("hi")
    wds_tar(root / "sub" / "00000.tar", image_samples(1))
    return root


def test_a_folder_lists_its_tar_and_parquet_shards_only(shards: Path) -> None:
    refs = list_shards(str(shards))
    assert [(r.name, r.kind) for r in refs] == [
        ("00000", "tar"),
        ("00001", "tar"),
        ("00002", "tar"),
        ("extra", "parquet"),
    ]
    assert refs[0].url == str(shards / "00000.tar")
    assert refs[0].size == (shards / "00000.tar").stat().st_size


def test_a_glob_a_brace_range_and_one_file(shards: Path) -> None:
    assert [r.name for r in list_shards(f"{shards}/*.tar")] == ["00000", "00001", "00002"]
    assert [r.name for r in list_shards(f"{shards}/{{00002..00000}}.tar")] == ["00002", "00001", "00000"]
    assert [r.url for r in list_shards(f"file://{shards}/00001.tar")] == [str(shards / "00001.tar")]


def test_colliding_stems_are_named_by_their_path_below_the_pattern(shards: Path) -> None:
    refs = list_shards(f"{shards}/**/00000.tar")
    assert sorted(r.name for r in refs) == ["00000", "sub__00000"]
    refs = list_shards(f"{shards}/{{.,sub}}/00000.tar")
    assert [r.name for r in refs] == ["00000", "sub__00000"]


def test_shard_refs_round_trip_as_json_values(shards: Path) -> None:
    for ref in list_shards(str(shards)):
        assert ShardRef.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="kind 'zip'"):
        ShardRef.from_dict({"url": "x", "name": "x", "kind": "zip"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{root}/nothing-here", r"^no \.tar or \.parquet shard matches .*/nothing-here: check the pattern"),
        ("{root}/*.zip", r"^no \.tar or \.parquet shard matches .*\*\.zip: check the pattern"),
        ("{root}/notes.txt", r"notes\.txt is not a \.tar, \.tar\.gz, \.tgz or \.parquet file"),
        (
            "{root}/{{00000..00005}}.tar",
            r"^3 of the 6 shards that .* names do not exist \(.*00003\.tar, .*00004\.tar, .*00005\.tar\)",
        ),
    ],
)
def test_nothing_to_read_is_one_clear_sentence(shards: Path, pattern: str, message: str) -> None:
    with pytest.raises(ShardSourceError, match=message) as caught:
        list_shards(pattern.format(root=shards))
    assert "\n" not in str(caught.value)


def test_two_formats_of_one_name_are_refused_not_guessed(tmp_path: Path) -> None:
    wds_tar(tmp_path / "a.tar", image_samples(1))
    plain_parquet(tmp_path / "a.parquet", {"image": image_bytes(1)})
    with pytest.raises(ShardSourceError, match=r"would both write outputs named 'a'"):
        list_shards(str(tmp_path))
