"""Every kind of legal name end to end (issue 19), in `kcap run` and in `kcap up`, then in
`kcap export` and `kcap report`: bytes that are not UTF-8, a backslash, a newline, a leading
dash, names of 200 to 255 bytes, names that differ only in case or in Unicode normalisation,
and a path deeper than PATH_MAX. Each input ends in exactly one folder (errors with a
reason), the run finishes, nothing is retried or set aside, and both tools show each name."""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from producer.enqueue import Enqueuer
from producer.scan import InputFilter
from shared.core.inflight import InFlight
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import drop_images, records, routed_sources
from tests.soak.hostile import HostileFile, name_files, write_by_descriptor


def shown(name: str) -> str:
    """As report and export show a name (shared.core.naming.shown, written out here)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


# A fragment each kind of errors record's reason must hold.
REASONS = {"deep": "PATH_MAX", "name": "truncated"}


def _drop_every_name(settings: Settings) -> dict[str, HostileFile]:
    """Every name under names/, a few normal images beside them; by relative path."""
    assert settings.input_dir is not None
    dropped = {f.rel: f for f in name_files()}
    for file in dropped.values():
        write_by_descriptor(settings.input_dir, file.rel, file.data)
    for rel in drop_images(settings, 3, seed=19, prefix="plain-"):
        dropped[rel] = HostileFile(rel, (settings.input_dir / rel).read_bytes(), "plain", False)
    return dropped


def _assert_each_once(settings: Settings, dropped: dict[str, HostileFile], logs: str) -> None:
    assert settings.output_dir is not None and settings.errors_dir is not None
    found = records(settings)
    by_root = {root: sorted(str(r["source"]) for r in rows) for root, rows in found.items()}
    assert sorted(s for rows in by_root.values() for s in rows) == sorted(dropped)  # once each
    assert by_root["errors"] == sorted(rel for rel, f in dropped.items() if f.bad)
    for record in found["errors"]:
        fragment = REASONS[dropped[str(record["source"])].kind]
        assert fragment in str(record["reason"]), record
    for record in found["output"]:  # the very bytes, under a name within NAME_MAX
        placed = Path(str(record["_path"])).with_name(str(record["image"]))
        assert placed.read_bytes() == dropped[str(record["source"])].data
        assert len(os.fsencode(placed.name)) <= 255
    # The name that is not UTF-8 keeps its bytes; metadata.jsonl stays UTF-8 for its readers.
    assert (settings.output_dir / "names" / os.fsdecode(b"caf\xe9 latin-1.png")).is_file()
    metadata = (settings.output_dir / "metadata.jsonl").read_bytes().decode("utf-8")
    names = {json.loads(line)["file_name"] for line in metadata.splitlines()}
    assert "names/-dash.png" in names and not any("latin-1" in n for n in names)
    # Filed once each, at once: nothing retried, nothing set aside, nothing crashed.
    for sign in ("Traceback", "retrying in", "refused path", "Logging error"):
        assert sign not in logs, sign


def _export_and_report(
    settings: Settings, procs: Processes, dropped: dict[str, HostileFile], tmp_path: Path
) -> None:
    assert settings.output_dir is not None
    export, report = tmp_path / "export.jsonl", tmp_path / "report.html"
    for args in (("export", "--format", "jsonl", "--out", str(export)), ("report", "--out", str(report))):
        tool = procs.kcap(args[0], str(settings.output_dir), *args[1:], settings=settings)
        assert tool.wait(timeout=60) == 0, procs.tail()
    rows = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert sorted(row["source"] for row in rows) == sorted(shown(rel) for rel in dropped)
    assert shown(os.fsdecode(b"names/caf\xe9 latin-1.png")) == "names/caf\\xe9 latin-1.png"
    page = report.read_text(encoding="utf-8")
    for rel in dropped:  # each is named on the page (a name cut to fit keeps its start)
        assert html.escape(shown(PurePosixPath(rel).name))[:40] in page, rel


@pytest.mark.slow  # about 22 s on a loaded 2-core machine
def test_kcap_run_files_every_legal_name_once_and_export_and_report_show_each(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    settings = make_settings(max_in_flight=3)  # three stuck names used to jam the service
    dropped = _drop_every_name(settings)
    run = procs.kcap("run", settings=settings)
    try:
        assert run.wait(timeout=240) == 0, procs.tail()
    except subprocess.TimeoutExpired:
        pytest.fail(f"kcap run did not finish\n{procs.tail()}")
    assert settings.state_dir is not None
    logs = procs.logs() + (settings.state_dir / "logs" / "kcap.log").read_text(errors="replace")
    _assert_each_once(settings, dropped, logs)
    _export_and_report(settings, procs, dropped, tmp_path)


@pytest.mark.slow
def test_kcap_up_files_every_legal_name_once_from_its_scan_and_its_events(
    make_settings: Callable[..., Settings], procs: Processes, tmp_path: Path
) -> None:
    settings = make_settings(max_in_flight=3)
    assert settings.input_dir is not None and settings.state_dir is not None
    early = {rel: f for rel, f in _drop_every_name(settings).items() if rel.startswith("names/")}
    (settings.input_dir / "names").rename(settings.input_dir / "early")  # found by the start scan
    dropped = {rel.replace("names/", "early/", 1): f for rel, f in early.items()}
    up = procs.kcap("up", "--no-flower", settings=settings)
    wait_for(
        lambda: len(routed_sources(settings)) >= 3, timeout_s=120, what="the scan's first", logs=procs.tail
    )
    # The same names again while it runs: these come by watcher events.
    dropped.update(_drop_every_name(settings))
    wait_for(
        lambda: len(routed_sources(settings)) >= len(dropped),
        timeout_s=180,
        what=f"{len(dropped)} routed",
        logs=procs.tail,
    )
    up.terminate()
    assert up.wait(timeout=60) == 0, procs.tail()
    logs = procs.logs() + (settings.state_dir / "logs" / "kcap.log").read_text(errors="replace")
    _assert_each_once(settings, dropped, logs)
    _export_and_report(settings, procs, dropped, tmp_path)


def test_a_file_deeper_than_path_max_is_found_and_refused_with_a_reason(
    make_settings: Callable[..., Settings], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None
    (deep,) = [f for f in name_files() if f.kind == "deep"]
    write_by_descriptor(settings.input_dir, deep.rel, deep.data)
    with caplog.at_level(logging.WARNING):
        walked = [p.relative_to(settings.input_dir).as_posix() for p in InputFilter(settings).walk()]
    assert walked == [deep.rel] and not caplog.records  # found, and no folder was passed over
    publisher = StubPublisher()
    outcome = Enqueuer(settings, publisher, InFlight.connect(settings)).offer(
        settings.input_dir / deep.rel, deep.rel
    )
    assert outcome.status == "refused"
    ((result, _queue),) = publisher.results
    assert result.rel_path == deep.rel and "PATH_MAX" in result.error_reason
