"""Names kcap writes are never taken by an image; a half-written file is not filed as bad;
kcap's own temp files never stay in a dataset folder."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from producer.scan import find_done
from shared.core.errors import UnsafePathError
from shared.core.leftovers import sweep_leftovers
from shared.core.messages import Result
from shared.core.naming import job_id_for, sidecar_name_refusal
from shared.core.settings import Settings
from tests.results import result_for
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


def test_a_result_under_a_sidecar_name_is_filed_in_errors_even_when_ok(settings: Settings) -> None:
    assert settings.input_dir is not None and settings.errors_dir is not None
    (settings.input_dir / "photo.json").write_bytes(b"png bytes")
    routed = Router(settings).route(
        result_for("photo.json", b"png bytes", ok=True, caption="a cat", score=30.0)
    )
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
    failed = result_for(
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
    failed = result_for(
        "bad.png", b"junk", ok=False, error_reason="not an image", error_class="BadImageError"
    )
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


# -- every legal name (issue 19) -------------------------------------------------------------


def test_a_name_that_is_not_utf8_has_a_job_id_and_utf8_names_keep_theirs() -> None:
    name = os.fsdecode(b"caf\xe9.png")  # as os.walk gives it: a lone surrogate for \xe9
    assert len(job_id_for(name, "h")) == 32 and job_id_for(name, "h") != job_id_for("café.png", "h")
    # The id of a UTF-8 name is what it always was, so a restart over a done backlog skips it.
    assert job_id_for("café.png", "h") == hashlib.sha256("café.png\0h".encode()).hexdigest()[:32]


def test_a_name_that_is_not_utf8_is_filed_under_its_very_bytes(settings: Settings) -> None:
    assert settings.input_dir is not None and settings.output_dir is not None
    raw = b"caf\xe9 \xff.png"
    (settings.input_dir.joinpath(os.fsdecode(raw))).write_bytes(b"png bytes")
    result = result_for(os.fsdecode(raw), b"png bytes", ok=True, caption="a cat", score=30.0)
    # Through JSON as Celery sends it, and back: the name survives byte for byte.
    sent = Result.decode(json.dumps(result.to_dict()))
    assert sent == result and Result.decode(result.encode().encode("utf-8")) == result
    routed = Router(settings).route(sent)
    assert routed.outcome == "output"
    out = os.fsencode(settings.output_dir)
    assert sorted(os.listdir(out)) == [b"caf\xe9 \xff.json", b"caf\xe9 \xff.png", b"caf\xe9 \xff.txt"]
    assert (settings.output_dir / os.fsdecode(raw)).read_bytes() == b"png bytes"
    record = json.loads((settings.output_dir / os.fsdecode(b"caf\xe9 \xff.json")).read_bytes())
    assert record["source"] == os.fsdecode(raw)  # UTF-8 on disk, the name back exactly
    # No metadata.jsonl line: readers outside Python refuse such a name (and the whole file).
    assert not (settings.output_dir / "metadata.jsonl").exists()


def test_a_backslash_in_a_name_is_filed(settings: Settings) -> None:
    assert settings.input_dir is not None and settings.output_dir is not None
    (settings.input_dir / "a\\..\\b.png").write_bytes(b"png bytes")
    routed = Router(settings).route(
        result_for("a\\..\\b.png", b"png bytes", ok=True, caption="a", score=30.0)
    )
    assert routed.outcome == "output" and (settings.output_dir / "a\\..\\b.png").read_bytes() == b"png bytes"


def test_temp_names_do_not_grow_with_the_name(tmp_path: Path) -> None:
    target = tmp_path / ("x" * 251 + ".png")  # NAME_MAX exactly
    atomic_copy(io.BytesIO(b"bytes"), target)
    assert target.read_bytes() == b"bytes" and os.listdir(tmp_path) == [target.name]


@pytest.mark.parametrize("stem_bytes", [196, 246, 251])
def test_long_names_are_filed_with_every_sidecar_and_collision_within_name_max(
    settings: Settings, stem_bytes: int
) -> None:
    assert settings.input_dir is not None and settings.output_dir is not None
    router = Router(settings)
    for name in ("é" * (stem_bytes // 2) + "x" * (stem_bytes % 2) + ".png", "y" * stem_bytes + ".png"):
        for i in range(3):  # the same name with new bytes: the collision names (+9, +18 bytes)
            data = f"png {name} {i}".encode()
            (settings.input_dir / name).write_bytes(data)
            assert router.route(result_for(name, data, ok=True, caption="a", score=30.0)).outcome == "output"
            # Other bytes under the same name: another job (a job is filed in one folder only).
            data += b" rewritten"
            (settings.input_dir / name).write_bytes(data)
            bad = result_for(name, data, ok=False, error_reason="not an image", error_class="BadImageError")
            os.utime(settings.input_dir / name, (time.time() - 60, time.time() - 60))
            assert router.route(bad).outcome == "errors"  # <name>.error.json: +11 bytes
    for root in (settings.output_dir, settings.errors_dir):
        assert root is not None
        names = os.listdir(root)
        assert all(len(os.fsencode(n)) <= 255 for n in names)
        records = [json.loads((root / n).read_text()) for n in names if n.endswith(".json")]
        assert len(records) == 6  # two names, three contents each, in each root
        for record in records:  # each cut name's image, caption and record share one stem
            if "image" in record and record.get("text"):
                assert (root / record["image"]).is_file()
                assert (root / (Path(record["image"]).stem + ".txt")).is_file()


def test_a_destination_path_over_path_max_files_the_image_as_an_error_at_once(tmp_path: Path) -> None:
    # The output root is deep enough that the image's path there passes PATH_MAX, though
    # its input path does not: ENAMETOOLONG, which waiting never mends.
    deep = tmp_path / "out"
    while len(os.fsencode(deep)) < 3900:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    settings = Settings(input_dir=tmp_path / "in", output_dir=deep, errors_dir=tmp_path / "errors")
    name = "sub/" + "p" * 200 + ".png"
    (tmp_path / "in" / name).write_bytes(b"png bytes")
    routed = Router(settings).route(result_for(name, b"png bytes", ok=True, caption="a", score=30.0))
    assert routed.outcome == "errors" and routed.newly_placed
    reason = json.loads((tmp_path / "errors" / f"{name}.error.json").read_text())
    assert reason["error_class"] == "CannotFile" and "File name too long" in reason["reason"]
    assert (tmp_path / "errors" / name).read_bytes() == b"png bytes"


def test_an_error_its_folder_cannot_name_goes_under_its_job_id_and_counts_as_done(tmp_path: Path) -> None:
    # Output and errors roots so deep that a 200-byte name passes PATH_MAX in both: the
    # output refuses it, then its own errors name; the job id's name still fits.
    roots = {}
    for name in ("out", "errors"):
        deep = tmp_path / name
        while len(os.fsencode(deep)) < 3850:
            deep = deep / ("d" * 100)
        deep.mkdir(parents=True)
        roots[name] = deep
    (tmp_path / "in" / "sub").mkdir(parents=True)
    settings = Settings(input_dir=tmp_path / "in", output_dir=roots["out"], errors_dir=roots["errors"])
    rel = "sub/" + "p" * 200 + ".png"
    (tmp_path / "in" / rel).write_bytes(b"png bytes")
    result = result_for(rel, b"png bytes", ok=True, caption="a", score=30.0)
    routed = Router(settings).route(result)
    assert routed.outcome == "errors" and routed.placement is not None
    assert routed.placement.record == roots["errors"] / f"{result.job_id}.png.error.json"
    record = json.loads(routed.placement.record.read_text())
    assert record["source"] == rel and "File name too long" in record["reason"]
    assert (roots["errors"] / f"{result.job_id}.png").read_bytes() == b"png bytes"
    # The producer sees it done: it is never sent again.
    assert find_done(settings, rel, result.content_sha256, result.job_id) == routed.placement.record


def test_a_result_not_even_the_errors_root_takes_is_refused_for_good_not_retried(tmp_path: Path) -> None:
    # The errors root is so deep that no name fits in it: waiting mends nothing, so the
    # route task must get UnsafePathError (set aside), never an OSError (retried for ever).
    errors = tmp_path / "errors"
    while len(os.fsencode(errors)) < 4080:  # under PATH_MAX, with no room for a name
        errors = errors / ("e" * min(200, 4080 - len(os.fsencode(errors)) - 1))
    errors.mkdir(parents=True)
    (tmp_path / "in").mkdir()
    settings = Settings(input_dir=tmp_path / "in", output_dir=tmp_path / "out", errors_dir=errors)
    (tmp_path / "in" / "bad.png").write_bytes(b"junk")
    failed = result_for("bad.png", b"junk", ok=False, error_reason="not an image", error_class="Refused")
    with pytest.raises(UnsafePathError, match="cannot be filed anywhere"):
        Router(settings).route(failed)


def test_the_live_display_shows_a_name_that_is_not_utf8_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from shared.cli.progress import Progress
    from shared.core import logs

    # The display takes over the console handler; the test gives it back as it found it.
    monkeypatch.setattr(logs, "_console", logs._console)
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    terminal = io.BytesIO()
    # A terminal takes UTF-8 only: a lone surrogate written to it as it is would raise.
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(terminal, encoding="utf-8", errors="strict"))
    progress = Progress(title="kcap run", log_dir=tmp_path, live=True)
    try:
        progress.emit(os.fsdecode(b"caf\xe9.png refused: not an image"))
    finally:
        progress.close()
    sys.stdout.flush()
    assert b"caf\\xe9.png refused" in terminal.getvalue()


def test_a_walk_of_a_folder_that_is_gone_names_it_in_a_warning_and_raises_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from producer.scan import InputFilter

    assert settings.input_dir is not None
    gone = settings.input_dir / "moved away"  # its event came, then it went
    with caplog.at_level(logging.WARNING, logger="producer.scan"):
        assert list(InputFilter(settings).walk(gone)) == []
    assert "cannot list the folder" in caplog.text and "moved away" in caplog.text
