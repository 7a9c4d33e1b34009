"""`kcap export` and shared.report.dataset, on folders written by hand (the on-disk contract)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from shared.cli.main import main
from shared.core.errors import ConfigError
from shared.report.dataset import Roots, percentile, read_dataset, resolve_roots, summarize
from shared.report.export import COLUMNS, write_export
from tests.tolerances import float64_error


@pytest.fixture(autouse=True)
def no_kcap_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folder defaults come from KCAP_* variables: a developer's own must not leak in."""
    for name in [name for name in os.environ if name.startswith("KCAP_")]:
        monkeypatch.delenv(name)


def write_result(
    root: Path,
    rel: str,
    *,
    score: float | None,
    caption: str = "a photo",
    threshold: float | None = 15.0,
    entities: list[dict[str, Any]] | None = None,
    size: tuple[int, int] = (32, 24),
    colour: str = "steelblue",
    **extra: Any,
) -> Path:
    """An image, its caption and its record, as the route task leaves them."""
    image = root / rel
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(image)
    stem = image.with_suffix("")
    stem.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    record = {
        "job_id": f"job-{rel}",
        "source": rel,
        "image": image.name,
        "caption": caption,
        "entities": entities or [],
        "clip_score": score,
        "clipscore": None if score is None else round(2.5 * max(score / 100, 0), 4),
        "threshold": threshold,
        "outcome": root.name,
        "width": size[0],
        "height": size[1],
        "prompt": "Describe:",
        "timings": {"caption_s": 0.1},
        **extra,
    }
    stem.with_suffix(".json").write_text(json.dumps(record), encoding="utf-8")
    return image


def write_error(root: Path, rel: str, reason: str = "corrupt or truncated image") -> Path:
    image = root / rel
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"not an image")
    record = {"job_id": f"job-{rel}", "source": rel, "image": image.name, "reason": reason}
    record["error_class"] = "BadImageError"
    image.with_name(image.name + ".error.json").write_text(json.dumps(record), encoding="utf-8")
    return image


@pytest.fixture
def run_folders(tmp_path: Path) -> Roots:
    """Scores 20, 25, 30 in output (one in a sub-folder), 5 and 10 in clip_failed, one error."""
    out, failed, errors = tmp_path / "captioned", tmp_path / "clip_failed", tmp_path / "errors"
    write_result(out, "a.png", score=20.0, caption="a red square")
    write_result(out, "sub/b.png", score=25.0, caption='a "quoted", comma caption')
    write_result(
        out,
        "sub/c.png",
        score=30.0,
        entities=[{"phrase": "a dog", "start": 0, "end": 5, "boxes": [[0.1, 0.2, 0.5, 0.9]]}],
    )
    write_result(failed, "d.png", score=5.0)
    write_result(failed, "deep/er/e.png", score=10.0)
    write_error(errors, "sub/broken.jpg")
    return Roots(output=out, clip_failed=failed, errors=errors)


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [5.0, 10.0, 20.0, 25.0, 30.0]
    assert percentile(values, 0) == 5.0
    assert percentile(values, 50) == 20.0
    # 0.4 of the way from 5 to 10, 0.6 of the way from 25 to 30: the position, the step and
    # the sum each round once in float64, at the size of the values (30 at most).
    spread = float64_error(3, magnitude=30.0)
    assert percentile(values, 10) == pytest.approx(7.0, rel=0, abs=spread)
    assert percentile(values, 90) == pytest.approx(28.0, rel=0, abs=spread)
    assert percentile([3.0], 90) == 3.0


def test_summary_counts_and_statistics_cover_every_record(run_folders: Roots) -> None:
    summary = summarize(read_dataset(run_folders))
    assert summary["counts"] == {
        "output": 3,
        "clip_failed": 2,
        "errors": 1,
        "total": 6,
        "unreadable_records": 0,
    }
    stats = summary["clip_score"]
    assert stats["count"] == 5
    assert (stats["min"], stats["max"]) == (5.0, 30.0)
    # fmean: an exactly rounded sum, then a division (2 roundings); percentiles: 3 (above).
    assert stats["mean"] == pytest.approx(18.0, rel=0, abs=float64_error(2, magnitude=30.0))
    assert stats["median"] == 20.0
    assert stats["p10"] == pytest.approx(7.0, rel=0, abs=float64_error(3, magnitude=30.0))
    assert stats["p90"] == pytest.approx(28.0, rel=0, abs=float64_error(3, magnitude=30.0))
    assert stats["threshold"] == 15.0
    assert summary["pass_rate"] == pytest.approx(0.6, rel=0, abs=float64_error(1, magnitude=1.0))  # 3 / 5
    assert summary["clipscore"]["max"] == 0.75  # the largest value as written: round(2.5 x 0.3, 4)


def test_csv_has_one_row_per_image_and_summary_json_beside_it(run_folders: Roots, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "run.csv"
    write_export(run_folders, out, fmt="csv")
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    by_path = {(row["root"], row["path"]): row for row in rows}
    assert sorted(by_path) == [
        ("clip_failed", "d.png"),
        ("clip_failed", "deep/er/e.png"),
        ("errors", "sub/broken.jpg"),
        ("output", "a.png"),
        ("output", "sub/b.png"),
        ("output", "sub/c.png"),
    ]
    assert by_path[("output", "sub/b.png")]["caption"] == 'a "quoted", comma caption'
    assert float(by_path[("output", "sub/c.png")]["clip_score"]) == 30.0
    assert by_path[("output", "sub/c.png")]["entities"] == "1"
    assert (by_path[("output", "a.png")]["width"], by_path[("output", "a.png")]["height"]) == ("32", "24")
    error = by_path[("errors", "sub/broken.jpg")]
    assert error["error"] == "corrupt or truncated image" and error["clip_score"] == ""
    assert error["job_id"] == "job-sub/broken.jpg"
    summary = json.loads((tmp_path / "exports" / "summary.json").read_text())
    mean = summary["clip_score"]["mean"]
    assert summary["counts"]["total"] == 6
    assert mean == pytest.approx(18.0, rel=0, abs=float64_error(2, magnitude=30.0))
    assert summary["export"] == str(out) and summary["format"] == "csv"


def test_jsonl_keeps_types_and_nulls(run_folders: Roots, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    write_export(run_folders, out, fmt="jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    first = rows[0]  # rows run output, clip_failed, errors, each by path
    assert (first["root"], first["path"], first["clip_score"], first["entities"]) == (
        "output",
        "a.png",
        20.0,
        0,
    )
    assert rows[-1]["root"] == "errors" and rows[-1]["clip_score"] is None


def test_newer_record_fields_are_read_and_older_ones_tolerated(tmp_path: Path) -> None:
    out = tmp_path / "captioned"
    entity = {
        "phrase": "a cat",
        "start": 0,
        "end": 5,
        "boxes": [[0.0, 0.5, 1.2, 0.25], [0.25, 0.25, 0.75, 1.0]],  # the first is not a box
        "boxes_px": [[8, 6, 24, 24]],
    }
    write_result(
        out,
        "new.png",
        score=22.0,
        caption="a cat",
        entities=[entity],
        text="photo of a cat, best quality",
        captions=[{"prompt": "p1", "caption": "a cat", "clip_score": 22.0, "entities": []}] * 2,
    )
    old = write_result(out, "old.png", score=None, threshold=None)
    record = json.loads(old.with_suffix(".json").read_text())
    for key in ("clipscore", "width", "height", "entities", "image", "threshold"):
        record.pop(key)
    old.with_suffix(".json").write_text(json.dumps(record))
    rows = {row.path: row for row in read_dataset(resolve_roots(out)).rows}
    new = rows["new.png"]
    assert new.caption == "photo of a cat, best quality" and new.captions == 2
    assert [e.boxes for e in new.entities] == [[[0.25, 0.25, 0.75, 1.0]]]
    assert new.entities[0].boxes_px == [[8.0, 6.0, 24.0, 24.0]]
    assert rows["old.png"].image_path == old  # found by its stem without "image"
    assert rows["old.png"].width is None and rows["old.png"].entities == []


def test_temp_files_hidden_folders_and_junk_json_are_not_records(tmp_path: Path) -> None:
    out = tmp_path / "captioned"
    write_result(out, "a.png", score=20.0)
    (out / ".kcap-tmp-123.json").write_text("{}")
    write_result(out / ".cache", "b.png", score=1.0)
    (out / "notes.json").write_text("[1, 2]")
    (out / "half.json").write_text('{"job_id": ')
    (out / "metadata.jsonl").write_text('{"file_name": "a.png", "job_id": "x"}\n')  # for `datasets`
    dataset = read_dataset(resolve_roots(out))
    assert [row.path for row in dataset.rows] == ["a.png"]
    assert sorted(path.name for path in dataset.unreadable) == ["half.json", "notes.json"]
    assert summarize(dataset)["counts"]["unreadable_records"] == 2


def test_default_folders_are_siblings_then_settings(
    run_folders: Roots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = resolve_roots(run_folders.output)
    assert (roots.clip_failed, roots.errors) == (tmp_path / "clip_failed", tmp_path / "errors")
    elsewhere = tmp_path / "elsewhere"
    write_result(elsewhere, "x.png", score=1.0)
    monkeypatch.setenv("KCAP_CLIP_FAILED_DIR", str(elsewhere))
    assert resolve_roots(run_folders.output).clip_failed == elsewhere
    flag = tmp_path / "flag"
    assert resolve_roots(run_folders.output, clip_failed_dir=flag).clip_failed == flag


def test_without_a_clip_failed_folder_nothing_is_judged(tmp_path: Path) -> None:
    out = tmp_path / "captioned"
    write_result(out, "a.png", score=None, threshold=None)
    roots = resolve_roots(out)
    summary = summarize(read_dataset(roots))
    assert roots.clip_failed is None and summary["pass_rate"] is None
    assert summary["clip_score"]["count"] == 0 and summary["clip_score"]["mean"] is None


def test_cli_prints_the_summary_and_writes_both_files(
    run_folders: Roots, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x" / "run.jsonl"
    assert main(["export", str(run_folders.output), "--format", "jsonl", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "output       3" in printed and "errors       1" in printed
    assert "median 20.00" in printed and "mean 18.00" in printed and "threshold    15" in printed
    assert len(out.read_text().splitlines()) == 6
    assert (out.parent / "summary.json").is_file()


def test_an_export_inside_a_results_folder_is_refused(run_folders: Roots) -> None:
    with pytest.raises(ConfigError, match="inside the output folder"):
        write_export(run_folders, run_folders.output / "export.csv", fmt="csv")
    assert not (run_folders.output / "summary.json").exists()


def test_a_missing_output_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "no output folder" in capsys.readouterr().err


def test_an_existing_summary_json_is_kept_unless_forced(
    run_folders: Roots, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary.json is a common name: another tool's file in the same folder is not replaced unasked."""
    out = tmp_path / "exports" / "rows.csv"
    out.parent.mkdir()
    theirs = out.parent / "summary.json"
    theirs.write_text('{"someone": "else"}\n')
    assert main(["export", str(run_folders.output), "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert f"{theirs} already exists" in said and "--force" in said
    assert theirs.read_text() == '{"someone": "else"}\n' and not out.exists()
    assert main(["export", str(run_folders.output), "--out", str(out), "--force"]) == 0
    assert json.loads(theirs.read_text())["counts"]["total"] == 6
    assert len(out.read_text().splitlines()) == 7  # header + 6 rows


def test_a_second_export_to_the_same_file_is_refused(run_folders: Roots, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    write_export(run_folders, out, fmt="jsonl")
    before = out.read_text(), (tmp_path / "summary.json").read_text()
    with pytest.raises(ConfigError, match=r"run\.jsonl and .*summary\.json already exist"):
        write_export(run_folders, out, fmt="jsonl")
    assert (out.read_text(), (tmp_path / "summary.json").read_text()) == before
    write_export(run_folders, out, fmt="jsonl", force=True)
