from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.errors import UnsafePathError
from shared.core.imagetypes import sniff
from shared.core.naming import candidate_placements, inside, is_ignored_name, job_id_for, safe_relpath


@pytest.mark.parametrize(
    "bad", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "a\0b.jpg", "", "./a.jpg", "\ud800.png"]
)
def test_paths_that_climb_out_are_refused(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(bad)


def test_a_backslash_is_a_plain_name_character_on_posix(tmp_path: Path) -> None:
    # A legal POSIX name (issue 19): one name inside the root, never a way out of it.
    assert safe_relpath("a\\..\\b.jpg").parts == ("a\\..\\b.jpg",)
    assert inside(tmp_path, "sub/a\\..\\b.jpg") == tmp_path / "sub" / "a\\..\\b.jpg"


def test_inside_refuses_a_symlinked_folder_that_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert inside(root, "sub/a b ü.jpg") == root / "sub" / "a b ü.jpg"
    with pytest.raises(UnsafePathError, match="through a link"):
        inside(root, "link/a.jpg")


def test_job_id_is_stable_per_path_and_bytes() -> None:
    assert job_id_for("a.jpg", "h1") == job_id_for("a.jpg", "h1")
    assert job_id_for("a.jpg", "h1") != job_id_for("a.png", "h1")
    assert job_id_for("a.jpg", "h1") != job_id_for("a.jpg", "h2")


def test_collision_candidates_keep_kohya_pairs(tmp_path: Path) -> None:
    first, second, third = candidate_placements(tmp_path, "a.png", "0123456789abcdef", "feedbeef99")
    assert (first.image.name, first.caption.name, first.record.name) == ("a.png", "a.txt", "a.json")
    assert (second.image.name, second.caption.name) == ("a-01234567.png", "a-01234567.txt")
    assert third.record.name == "a-01234567-feedbeef.json"


@pytest.mark.parametrize("name", [".DS_Store", "x.jpg.part", "~lock.jpg", "a.jpg~", ".hidden.png", "b.tmp"])
def test_hidden_and_temporary_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name)


def test_regular_names_are_not_ignored() -> None:
    assert not is_ignored_name("photo 1 ü.JPG")


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF89a", "gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
        (b"BM\0\0", "bmp"),
        (b"II*\x00", "tiff"),
        (b"hello world", None),
    ],
)
def test_images_are_recognised_by_content(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind
