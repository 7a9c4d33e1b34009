from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from shared.core.errors import UnsafePathError
from shared.core.messages import Result
from shared.core.settings import Settings
from tests.results import result_for
from workers.routing.atomic import _temp_beside
from workers.routing.router import Router
from workers.routing.task import as_error


@pytest.fixture
def roots(tmp_path: Path) -> Settings:
    (tmp_path / "in").mkdir()
    return Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        clip_failed_dir=tmp_path / "failed",
        errors_dir=tmp_path / "errors",
        threshold=15.0,
        bad_image_settle_s=0.0,  # tests/unit/test_hostile_names.py covers the wait
    )


def _drop(settings: Settings, rel: str, data: bytes) -> Path:
    assert settings.input_dir is not None
    path = settings.input_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _result(rel: str, data: bytes, *, ok: bool = True, score: float | None = 20.0) -> Result:
    return result_for(
        rel,
        data,
        ok=ok,
        caption="a red square on a white wall" if ok else "",
        score=score if ok else None,
        error_reason="" if ok else "corrupt or truncated image",
        error_class="" if ok else "BadImageError",
    )


def test_a_good_score_lands_in_output_with_caption_and_record(roots: Settings) -> None:
    _drop(roots, "sub/dir/a.jpg", b"jpeg-bytes")
    routed = Router(roots).route(_result("sub/dir/a.jpg", b"jpeg-bytes", score=15.0))
    assert routed.outcome == "output" and routed.newly_placed
    out = roots.output_dir / "sub" / "dir"  # type: ignore[operator]
    assert (out / "a.jpg").read_bytes() == b"jpeg-bytes"
    assert (out / "a.txt").read_bytes() == b"a red square on a white wall"  # as the original wrote it
    record = json.loads((out / "a.json").read_text())
    assert record["clip_score"] == 15.0 and record["outcome"] == "output"
    assert record["source"] == "sub/dir/a.jpg"
    assert (roots.input_dir / "sub/dir/a.jpg").exists()  # type: ignore[operator]  # copy mode


def test_the_record_names_every_score_and_which_one_routed(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"abc")
    result = replace(
        _result("a.jpg", b"abc", score=16.5),
        score_method="original",
        score_family="clip",
        score_original=16.5,
        score_sentence_chunks=14.25,
        clipscore=0.35,
        slices=2,
        chunks=1,
    )
    Router(roots).route(result)
    record = json.loads((roots.output_dir / "a.json").read_text())  # type: ignore[operator]
    assert {k: record[k] for k in record if k.startswith("clip") and k != "clip_model"} == {
        "clip_score": 16.5,
        "clip_score_method": "original",
        "clip_score_family": "clip",
        "clip_score_original": 16.5,
        "clip_score_sentence_chunks": 14.25,
        "clipscore": 0.35,
        "clip_slices": 2,
        "clip_chunks": 1,
    }


def test_a_low_score_lands_in_clip_failed(roots: Settings) -> None:
    _drop(roots, "b.png", b"png")
    routed = Router(roots).route(_result("b.png", b"png", score=14.99))
    assert routed.outcome == "clip_failed"
    assert (roots.clip_failed_dir / "b.txt").exists()  # type: ignore[operator]
    assert not (roots.output_dir / "b.png").exists()  # type: ignore[operator]


def test_redelivery_routes_once(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"x")
    router = Router(roots)
    first = router.route(_result("a.jpg", b"x"))
    again = router.route(_result("a.jpg", b"x"))
    assert first.newly_placed and not again.newly_placed
    out = roots.output_dir
    assert out is not None
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "a.txt", "metadata.jsonl"]


def test_a_crash_between_caption_and_record_is_completed_on_redelivery(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"x")
    router = Router(roots)
    router.route(_result("a.jpg", b"x"))
    record = roots.output_dir / "a.json"  # type: ignore[operator]
    record.unlink()  # as if the worker died before the record was written
    again = router.route(_result("a.jpg", b"x"))
    assert again.newly_placed
    assert json.loads(record.read_text())["source"] == "a.jpg"
    out = roots.output_dir
    assert out is not None
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "a.txt", "metadata.jsonl"]


def test_same_stem_different_extensions_never_overwrite(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"jpg")
    _drop(roots, "a.png", b"png")
    router = Router(roots)
    router.route(_result("a.jpg", b"jpg"))
    second = router.route(_result("a.png", b"png"))
    sha8 = hashlib.sha256(b"png").hexdigest()[:8]
    assert second.placement is not None and second.placement.image.name == f"a-{sha8}.png"
    assert (roots.output_dir / "a.txt").exists() and (roots.output_dir / f"a-{sha8}.txt").exists()  # type: ignore[operator]
    assert (roots.output_dir / "a.jpg").read_bytes() == b"jpg"  # type: ignore[operator]


def test_unreadable_input_goes_to_errors_with_a_reason(roots: Settings) -> None:
    _drop(roots, "bad.jpg", b"not an image")
    routed = Router(roots).route(_result("bad.jpg", b"not an image", ok=False))
    assert routed.outcome == "errors"
    reason = json.loads((roots.errors_dir / "bad.jpg.error.json").read_text())  # type: ignore[operator]
    assert reason["reason"] == "corrupt or truncated image"
    assert reason["error_class"] == "BadImageError"
    assert reason["content_sha256"] == hashlib.sha256(b"not an image").hexdigest()
    assert reason["time"] > 0
    assert (roots.errors_dir / "bad.jpg").read_bytes() == b"not an image"  # type: ignore[operator]


@pytest.mark.parametrize("rel", ["../escape.jpg", "/abs/x.jpg", "a/\0.jpg", "a/../../x.jpg"])
def test_paths_outside_the_roots_are_refused(roots: Settings, rel: str) -> None:
    result = Result(
        job_id="deadbeef", rel_path=rel, content_sha256="0" * 64, ok=True, caption="c", score=99.0
    )
    with pytest.raises(UnsafePathError):
        Router(roots).route(result)
    assert not any(roots.output_dir.parent.glob("escape*"))  # type: ignore[union-attr]


def test_move_mode_moves_only_after_the_record(roots: Settings) -> None:
    moved = roots.replace(input_mode="move")
    source = _drop(moved, "m.jpg", b"m")
    routed = Router(moved).route(_result("m.jpg", b"m"))
    assert routed.newly_placed and not source.exists()
    assert (moved.output_dir / "m.json").exists()  # type: ignore[operator]


def test_an_input_replaced_after_it_was_read_is_left_to_its_new_job(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"new bytes")
    routed = Router(roots).route(_result("a.jpg", b"old bytes"))
    assert routed.outcome is None and not routed.newly_placed
    assert not (roots.output_dir / "a.json").exists()  # type: ignore[operator]
    assert (roots.input_dir / "a.jpg").read_bytes() == b"new bytes"  # type: ignore[operator]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metadata_jsonl_has_one_line_per_image_even_on_retries(roots: Settings) -> None:
    for name in ("a.jpg", "sub/b.png"):
        _drop(roots, name, name.encode())
    router = Router(roots)
    router.route(_result("a.jpg", b"a.jpg"))
    router.route(_result("sub/b.png", b"sub/b.png"))
    router.route(_result("a.jpg", b"a.jpg"))  # a redelivery
    assert Router(roots).route(_result("sub/b.png", b"sub/b.png")).newly_placed is False  # a new process
    lines = _lines(roots.output_dir / "metadata.jsonl")  # type: ignore[operator]
    assert [line["file_name"] for line in lines] == ["a.jpg", "sub/b.png"]
    assert lines[0]["text"] == "a red square on a white wall" and lines[0]["clip_score"] == 20.0


def test_a_torn_metadata_line_is_cut_before_the_next_append(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"a")
    _drop(roots, "b.jpg", b"b")
    Router(roots).route(_result("a.jpg", b"a"))
    metadata = roots.output_dir / "metadata.jsonl"  # type: ignore[operator]
    with metadata.open("ab") as handle:
        handle.write(b'{"file_name": "half')  # a crash mid-write
    Router(roots).route(_result("b.jpg", b"b"))
    assert [line["file_name"] for line in _lines(metadata)] == ["a.jpg", "b.jpg"]


def test_prefix_suffix_and_caption_extension(roots: Settings) -> None:
    styled = roots.replace(caption_prefix="sks style, ", caption_suffix=", 4k", caption_ext=".caption")
    _drop(styled, "a.jpg", b"a")
    Router(styled).route(_result("a.jpg", b"a"))
    out = styled.output_dir
    assert out is not None
    assert (out / "a.caption").read_text() == "sks style, a red square on a white wall, 4k"
    record = json.loads((out / "a.json").read_text())
    assert record["text"] == "sks style, a red square on a white wall, 4k"
    assert record["caption"] == "a red square on a white wall"
    assert _lines(out / "metadata.jsonl")[0]["text"] == record["text"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("overwrite", "a red square on a white wall"),
        ("append", "hand written a red square on a white wall"),
        ("prepend", "a red square on a white wall hand written"),
        ("skip", "hand written"),
    ],
)
def test_an_existing_caption_kcap_did_not_write(roots: Settings, mode: str, expected: str) -> None:
    settings = roots.replace(existing=mode)
    _drop(settings, "a.jpg", b"a")
    out = settings.output_dir
    assert out is not None
    out.mkdir(parents=True)
    (out / "a.txt").write_text("hand written\n")
    router = Router(settings)
    router.route(_result("a.jpg", b"a"))
    (out / "a.json").unlink()  # a crash before the record: the retry must not add the text twice
    router.route(_result("a.jpg", b"a"))
    # skip leaves the file as it was, newline and all
    assert (out / "a.txt").read_text() == (expected + "\n" if mode == "skip" else expected)


def test_the_record_keeps_the_inputs_size_and_mtime_for_a_fast_restart(roots: Settings) -> None:
    source = _drop(roots, "a.jpg", b"abc")
    Router(roots).route(_result("a.jpg", b"abc"))
    record = json.loads((roots.output_dir / "a.json").read_text())  # type: ignore[operator]
    stat = source.stat()
    assert (record["source_size"], record["source_mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)


def _partial(settings: Settings, data: bytes, caption: str) -> None:
    """What a route worker killed between its writes leaves: the image and its caption in
    output, but no record and no dataset line."""
    assert settings.output_dir is not None
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    (settings.output_dir / "a.jpg").write_bytes(data)
    (settings.output_dir / "a.txt").write_text(caption)


@pytest.mark.parametrize(
    ("caption", "kept"),
    [
        ("a red square on a white wall", []),  # the caption it wrote goes with the image
        ("hand-made caption", ["a.txt"]),  # one that --existing kept is not kcap's to remove
    ],
)
def test_a_partial_placement_is_removed_before_its_job_is_filed_as_an_error(
    roots: Settings, caption: str, kept: list[str]
) -> None:
    _drop(roots, "a.jpg", b"x")
    _drop(roots, "b.jpg", b"y")
    router = Router(roots)
    router.route(_result("b.jpg", b"y"))  # a neighbour, untouched
    good = _result("a.jpg", b"x")
    _partial(roots, b"x", caption)
    routed = router.route(as_error(good, 3))  # the route worker died on it 3 times
    assert routed.outcome == "errors" and routed.newly_placed
    out, errors = roots.output_dir, roots.errors_dir
    assert out is not None and errors is not None
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["b.jpg", "b.json", "b.txt", "metadata.jsonl", *kept]
    )
    assert "a.jpg" not in (out / "metadata.jsonl").read_text()
    assert (errors / "a.jpg").read_bytes() == b"x"
    assert json.loads((errors / "a.jpg.error.json").read_text())["error_class"] == "WorkerDied"
    assert (roots.input_dir / "a.jpg").read_bytes() == b"x"  # type: ignore[operator]  # inputs stay


def test_a_job_filed_in_one_folder_is_not_filed_in_another(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"x")
    router = Router(roots)
    good = _result("a.jpg", b"x")
    router.route(good)
    # Given up on after its record was written (the death came before the attempt ended):
    again = router.route(as_error(good, 3))
    assert again.outcome == "output" and not again.newly_placed
    # A second result of the job that scored otherwise (another GPU's rounding):
    assert router.route(replace(good, score=1.0)).outcome == "output"
    assert not roots.errors_dir.exists()  # type: ignore[union-attr]
    assert not roots.clip_failed_dir.exists()  # type: ignore[union-attr]
    # And the other way round: filed as an error first, its good result is not filed again.
    _drop(roots, "b.jpg", b"y")
    router.route(as_error(_result("b.jpg", b"y"), 3))
    assert router.route(_result("b.jpg", b"y")).outcome == "errors"
    assert not (roots.output_dir / "b.jpg").exists()  # type: ignore[operator]


def test_nothing_is_removed_from_a_folder_that_holds_inputs(roots: Settings) -> None:
    # The output folder is the input folder: an image there without a record is an input.
    settings = roots.replace(output_dir=roots.input_dir)
    _drop(settings, "a.jpg", b"x")
    (settings.input_dir / "a.txt").write_text("a red square on a white wall")  # type: ignore[operator]
    Router(settings).route(as_error(_result("a.jpg", b"x"), 3))
    assert (settings.input_dir / "a.jpg").read_bytes() == b"x"  # type: ignore[operator]
    assert (settings.input_dir / "a.txt").exists()  # type: ignore[operator]


def test_a_filing_that_died_has_its_temp_files_removed_and_no_others(roots: Settings) -> None:
    _drop(roots, "a.jpg", b"x")
    out = roots.output_dir
    assert out is not None
    out.mkdir(parents=True)
    cut_short = [_temp_beside(out / "a.jpg"), _temp_beside(out / "a.txt")]
    others = [_temp_beside(out / "xa.jpg"), _temp_beside(out / "b-a.jpg"), out / "a.jpg.part"]
    for path in cut_short + others:
        path.write_bytes(b"half")
    Router(roots).remove_cut_short(_result("a.jpg", b"x"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in others)
