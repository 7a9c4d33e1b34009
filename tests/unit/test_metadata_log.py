"""MetadataLog: threads appending at once share fsyncs, every line lands exactly once, and a
failed write leaves no torn line and is written again by the retry."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from workers.routing import metadata
from workers.routing.metadata import MetadataLog


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_concurrent_appends_are_group_committed_and_each_lands_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        threading.Event().wait(0.01)  # a slow disk, so that lines pile up behind a write
        real_fsync(fd)

    monkeypatch.setattr(metadata.os, "fsync", counting_fsync)
    log = MetadataLog(tmp_path)
    start = threading.Barrier(32)

    def route(i: int) -> None:
        start.wait()
        assert log.ensure(f"job{i}", {"file_name": f"{i}.png", "text": "x"})
        assert not log.ensure(f"job{i}", {"file_name": f"{i}.png", "text": "x"})  # a retry

    threads = [threading.Thread(target=route, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    lines = _lines(tmp_path / "metadata.jsonl")
    assert sorted(str(line["job_id"]) for line in lines) == sorted(f"job{i}" for i in range(32))
    assert 1 <= fsyncs < 32  # shared: far fewer fsyncs than lines
    # A new log (a restarted route worker) knows every job already written.
    assert not MetadataLog(tmp_path).ensure("job7", {"file_name": "7.png", "text": "x"})


def test_a_failed_write_leaves_no_torn_line_and_the_retry_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = MetadataLog(tmp_path)
    assert log.ensure("first", {"file_name": "a.png", "text": "a"})
    real_fsync = os.fsync
    failing = True

    def full_disk(fd: int) -> None:
        if failing:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(metadata.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        log.ensure("second", {"file_name": "b.png", "text": "b"})
    assert [line["job_id"] for line in _lines(tmp_path / "metadata.jsonl")] == ["first"]
    failing = False
    assert log.ensure("second", {"file_name": "b.png", "text": "b"})
    assert [line["job_id"] for line in _lines(tmp_path / "metadata.jsonl")] == ["first", "second"]
