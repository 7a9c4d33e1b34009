"""Reading WebDataset tar shards: webdataset-made shards, every broken layout, member ranges."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from shared.core.errors import ShardSourceError
from shared.shards.reading import count_samples, read_samples
from tests.shard_makers import (
    MAX_IMAGE_BYTES,
    image_bytes,
    image_samples,
    only_ref,
    raw_tar,
    read_all,
    wds_tar,
)


def test_a_webdataset_shard_reads_back_sample_by_sample(tmp_path: Path) -> None:
    made = image_samples(5)
    samples = read_all(wds_tar(tmp_path / "a.tar", made))
    assert [s.key for s in samples] == [m["__key__"] for m in made]
    assert [s.index for s in samples] == list(range(5))
    assert [s.image for s in samples] == [m["png"] for m in made]
    assert all(s.ok and s.image_ext == "png" and s.member == f"{s.key}.png" for s in samples)
    assert [s.extra["txt"] for s in samples] == [f"caption {i}" for i in range(5)]
    assert count_samples(only_ref(tmp_path / "a.tar")) is None


def test_a_gzipped_webdataset_shard_reads_the_same(tmp_path: Path) -> None:
    made = image_samples(3)
    samples = read_all(wds_tar(tmp_path / "a.tar.gz", made, compress=True))
    assert [s.image for s in samples] == [m["png"] for m in made]


@pytest.mark.parametrize(("start", "stop"), [(0, 2), (2, 5), (1, 4), (4, None), (5, None), (3, 3)])
def test_a_range_yields_exactly_its_indexes_and_chunks_add_up(
    tmp_path: Path, start: int, stop: int | None
) -> None:
    path = wds_tar(tmp_path / "a.tar", image_samples(5))
    whole = read_all(path)
    part = read_all(path, start=start, stop=stop)
    assert part == whole[start:stop]


def test_a_member_that_is_not_an_image_still_reads_decoding_is_the_workers(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    path = raw_tar(tmp_path / "a.tar", [("a.jpg", b"this is not a jpeg"), ("b.png", png)])
    a, b = read_all(path)
    assert (a.key, a.ok, a.image, a.image_ext) == ("a", True, b"this is not a jpeg", "jpg")
    assert b.ok and b.image == png


def test_a_repeated_key_is_an_error_sample_not_a_merge(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    path = raw_tar(tmp_path / "a.tar", [("a.png", png), ("b.png", png), ("a.png", png), ("a.txt", b"x")])
    samples = read_all(path)
    assert [(s.key, s.index, s.ok) for s in samples] == [("a", 0, True), ("b", 1, True), ("a", 2, False)]
    assert "repeats in this shard (first at sample 0)" in samples[2].error and samples[2].image == b""


def test_a_member_twice_in_one_sample_is_an_error(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    samples = read_all(raw_tar(tmp_path / "a.tar", [("a.png", png), ("a.png", png), ("b.png", png)]))
    assert [(s.key, s.ok) for s in samples] == [("a", False), ("b", True)]
    assert "appears twice" in samples[0].error


def test_the_key_repeat_is_caught_in_a_later_chunk_too(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    path = raw_tar(tmp_path / "a.tar", [("a.png", png), ("b.png", png), ("a.png", png)])
    (late,) = read_all(path, start=2)
    assert late.key == "a" and "repeats" in late.error


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("dir/.hidden.png", "empty, '.' or '..' path part"),  # webdataset: key "dir/"
        ("bad\x01key.png", "control character"),
        ("a//b.png", "empty, '.' or '..' path part"),
        ("../up.png", "empty, '.' or '..' path part"),
    ],
)
def test_a_key_that_cannot_be_written_back_is_an_error_sample(tmp_path: Path, name: str, why: str) -> None:
    png = image_bytes(1)[0]
    odd, fine = read_all(raw_tar(tmp_path / "a.tar", [(name, png), ("fine.png", png)]))
    assert not odd.ok and why in odd.error and odd.image == b""
    assert fine.ok and fine.index == 1


def test_odd_but_safe_keys_read_as_they_are(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    names = ["./lead.png", "sub dir/with space.png", "ünï-cødé.png", "x" * 300 + ".png"]
    samples = read_all(raw_tar(tmp_path / "a.tar", [(n, png) for n in names]))
    assert [s.key for s in samples] == ["lead", "sub dir/with space", "ünï-cødé", "x" * 300]
    assert all(s.ok for s in samples)


def test_a_sample_without_an_image_is_an_error_sample(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    a, b = read_all(raw_tar(tmp_path / "a.tar", [("a.txt", b"only text"), ("a.json", b"{}"), ("b.png", png)]))
    assert not a.ok and "no image member among a.txt, a.json" in a.error and a.member == "a.txt"
    assert b.ok


def test_two_images_under_one_key_is_an_error_sample(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    (a,) = read_all(raw_tar(tmp_path / "a.tar", [("a.jpg", png), ("a.png", png)]))
    assert not a.ok and "two image members (a.jpg, a.png)" in a.error


def test_an_oversized_member_is_an_error_sample_and_is_notread_all(tmp_path: Path) -> None:
    small, big = b"x" * 100, b"y" * 5000
    a, b = read_all(raw_tar(tmp_path / "a.tar", [("a.png", big), ("b.png", small)]), max_image_bytes=1000)
    assert not a.ok and "5000 bytes, over the limit of 1000" in a.error and a.image == b""
    assert b.ok and b.image == small


def test_meta_members_and_folders_are_not_samples(tmp_path: Path) -> None:
    png = image_bytes(1)[0]
    samples = read_all(raw_tar(tmp_path / "a.tar", [("__meta__", b"{}"), ("a.png", png)]))
    assert [s.key for s in samples] == ["a"]


def _cut_points(samples: int) -> list[int]:
    # Each of webdataset's members here is a 512-byte header and one 512-byte data block. Cut
    # inside the first header, inside a member's data, at member boundaries, and exactly where
    # the end-of-archive block should start: every place a killed writer or a short download
    # can stop.
    return [300, 512 + 100, 1024, 2048 + 512 + 50, 4096, samples * 2 * 1024]


def test_a_truncated_tar_yields_what_was_readable_then_one_error_sample(tmp_path: Path) -> None:
    made = image_samples(6)
    data = wds_tar(tmp_path / "whole.tar", made).read_bytes()
    for cut in _cut_points(len(made)):
        path = tmp_path / f"cut{cut}" / "a.tar"
        path.parent.mkdir()
        path.write_bytes(data[:cut])
        samples = read_all(path)
        good, last = samples[:-1], samples[-1]
        assert all(s.ok for s in good), cut
        assert [s.image for s in good] == [m["png"] for m in made[: len(good)]], cut
        assert not last.ok and last.key.startswith("_truncated_") and "breaks at byte" in last.error, cut
        assert last.index == len(good), cut


def test_garbage_where_a_header_should_be_is_one_error_sample(tmp_path: Path) -> None:
    path = wds_tar(tmp_path / "whole.tar", image_samples(4))
    with tarfile.open(path) as tar:
        offset = next(m.offset for m in tar.getmembers() if m.name == "s00002.png")
    data = bytearray(path.read_bytes())
    data[offset : offset + 512] = b"\x07" * 512
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.tar").write_bytes(bytes(data))
    samples = read_all(tmp_path / "bad" / "a.tar")
    # The two whole samples before the garbage are yielded, then one error sample.
    assert [s.ok for s in samples] == [True, True, False]
    assert samples[-1].key == "_truncated_after_1" and f"breaks at byte {offset}" in samples[-1].error


def test_a_truncation_beyond_the_range_is_not_this_chunks(tmp_path: Path) -> None:
    data = wds_tar(tmp_path / "whole.tar", image_samples(6)).read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.tar").write_bytes(data[: 4 * 1024 + 700])
    whole = read_all(tmp_path / "cut" / "a.tar")
    assert not whole[-1].ok
    assert all(s.ok for s in read_all(tmp_path / "cut" / "a.tar", stop=whole[-1].index))
    assert read_all(tmp_path / "cut" / "a.tar", start=whole[-1].index) == [whole[-1]]


def test_a_shard_gone_since_it_was_listed_stops_with_one_sentence(tmp_path: Path) -> None:
    ref = only_ref(wds_tar(tmp_path / "a.tar", image_samples(1)))
    (tmp_path / "a.tar").unlink()
    with pytest.raises(
        ShardSourceError, match=r"^the shard .*/a\.tar does not exist \(now\): list the shards again$"
    ):
        list(read_samples(ref, max_image_bytes=MAX_IMAGE_BYTES))


def test_a_cut_gzipped_tar_is_one_error_sample_too(tmp_path: Path) -> None:
    made = [{"__key__": f"k{i}", "png": os.urandom(50_000)} for i in range(4)]  # incompressible
    data = wds_tar(tmp_path / "whole.tar.gz", made, compress=True).read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.tar.gz").write_bytes(data[: len(data) // 2])
    samples = read_all(tmp_path / "cut" / "a.tar.gz")
    assert [s.image for s in samples[:-1]] == [m["png"] for m in made[: len(samples) - 1]]
    assert 1 <= len(samples) - 1 < 4 and samples[-1].key.startswith("_truncated_after_")
    assert "EOFError" in samples[-1].error
