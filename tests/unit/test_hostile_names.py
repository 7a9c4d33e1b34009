"""Names kcap writes are never taken by an image; a half-written file is not filed as bad;
kcap's own temp files never stay in a dataset folder."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from shared.core.leftovers import sweep_leftovers
from shared.core.messages import Result
from shared.core.naming import job_id_for, sidecar_name_refusal
from shared.core.settings import Settings
from workers.routing.atomic import atomic_copy
from workers.routing.router import InputNotSettled, Router


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("shot.txt", "captions"),
        ("SHOT.TXT", "captions"),
        ("photo.json", "records"),
        ("photo.error.json", "records"),
        ("metadata.jsonl", "the dataset file"),
        ("other.jsonl", "the dataset file"),
    ],
)
def test_names_kcap_writes_are_refused_with_what_to_do(name: str, what: str) -> None:
    reason = sidecar_name_refusal(name)
    assert what in reason and "rename it with its image extension" in reason


@pytest.mark.parametrize("name", ["a.png", "a.txt.png", "json", "photo", "a.caption.jpg", ".txt"])
def test_image_names_are_accepted(name: str) -> None:
    assert sidecar_name_refusal(name) == ""


def test_a_custom_caption_extension_is_reserved_instead_of_txt() -> None:
    assert sidecar_name_refusal("a.caption", caption_ext=".caption")
    assert sidecar_name_refusal("a.txt", caption_ext=".caption") == ""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "in").mkdir()
    return Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        clip_failed_dir=tmp_path / "failed",
        errors_dir=tmp_path / "errors",
        bad_image_settle_s=5.0,
    )


def _result(rel: str, data: bytes, **fields: object) -> Result:
    sha = hashlib.sha256(data).hexdigest()
    return Result(job_id=job_id_for(rel, sha), rel_path=rel, content_sha256=sha, **fields)  # type: ignore[arg-type]


def test_a_result_under_a_sidecar_name_is_filed_in_errors_even_when_ok(settings: Settings) -> None:
    assert settings.input_dir is not None and settings.errors_dir is not None
    (settings.input_dir / "photo.json").write_bytes(b"png bytes")
    routed = Router(settings).route(_result("photo.json", b"png bytes", ok=True, caption="a cat", score=30.0))
    assert routed.outcome == "errors"
    assert (settings.errors_dir / "photo.json").read_bytes() == b"png bytes"
    assert "kcap writes for records" in (settings.errors_dir / "photo.json.error.json").read_text()
    assert not (settings.output_dir / "photo.json").exists()  # type: ignore[operator]


def test_a_decode_failure_of_a_file_written_moments_ago_waits_then_follows_the_file(
    settings: Settings,
) -> None:
    assert settings.input_dir is not None and settings.errors_dir is not None
    source = settings.input_dir / "slow.png"
    source.write_bytes(b"first half")
    failed = _result(
        "slow.png", b"first half", ok=False, error_reason="truncated", error_class="BadImageError"
    )
    router = Router(settings)
    with pytest.raises(InputNotSettled) as waiting:
        router.route(failed)
    assert 4.0 < waiting.value.wait_s <= 5.0
    assert not settings.errors_dir.exists() or not any(settings.errors_dir.iterdir())
    # The writer went on; once settled, the old job finds other bytes and files nothing.
    source.write_bytes(b"first half, second half")
    old = time.time() - 60
    os.utime(source, (old, old))
    routed = router.route(failed)
    assert routed.outcome is None and not routed.newly_placed
    assert not settings.errors_dir.exists() or not any(settings.errors_dir.iterdir())


def test_a_decode_failure_of_a_settled_file_is_filed(settings: Settings) -> None:
    assert settings.input_dir is not None and settings.errors_dir is not None
    source = settings.input_dir / "bad.png"
    source.write_bytes(b"junk")
    old = time.time() - 60
    os.utime(source, (old, old))
    failed = _result("bad.png", b"junk", ok=False, error_reason="not an image", error_class="BadImageError")
    assert Router(settings).route(failed).outcome == "errors"
    assert (settings.errors_dir / "bad.png.error.json").exists()


def test_a_copy_whose_bytes_changed_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.png"
    digest = atomic_copy(io.BytesIO(b"new bytes"), target, expect_sha256=hashlib.sha256(b"old").hexdigest())
    assert digest == hashlib.sha256(b"new bytes").hexdigest()
    assert list((tmp_path / "out").iterdir()) == []  # no target, no temp, no set-aside copy


def test_the_sweep_takes_abandoned_temp_files_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    old = time.time() - 3600
    abandoned = [
        out / ".kcap-tmp-1a2b-a.png",
        out / "sub" / ".kcap-tmp-3c4d-b.json",
        out / ".kcap-stale-1-c.png",
    ]
    for path in abandoned:
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    in_progress = out / ".kcap-tmp-5e6f-d.png"
    in_progress.write_bytes(b"being written")
    users = [out / "a.png", out / ".hidden-by-user"]
    for path in users:
        path.write_bytes(b"keep")
        os.utime(path, (old, old))
    removed = sweep_leftovers([out, None, tmp_path / "missing"], older_than_s=600)
    assert sorted(removed) == sorted(abandoned)
    assert in_progress.exists() and all(path.exists() for path in users)
