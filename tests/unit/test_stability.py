from __future__ import annotations

import os
from pathlib import Path

from producer.stability import StabilityGate


def test_a_file_is_released_only_after_it_stays_still(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 10)
    gate = StabilityGate(stable_after_s=1.0)
    gate.touch(path)
    assert gate.due(now=100.0) == []  # first look starts the clock
    assert gate.due(now=100.5) == []
    with path.open("ab") as handle:  # a copy still in progress
        handle.write(b"more")
    assert gate.due(now=101.2) == []  # changed: the clock restarts
    assert gate.due(now=101.9) == []
    assert gate.due(now=102.3) == [path]
    assert len(gate) == 0


def test_an_event_restarts_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    gate = StabilityGate(stable_after_s=1.0)
    gate.touch(path)
    gate.due(now=10.0)
    gate.touch(path)
    assert gate.due(now=10.9) == []
    assert gate.due(now=11.95) == [path]


def test_a_vanished_file_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    path.write_bytes(b"x")
    gate = StabilityGate(stable_after_s=0.5)
    gate.touch(path)
    os.unlink(path)
    assert gate.due(now=50.0) == []
    assert len(gate) == 0
