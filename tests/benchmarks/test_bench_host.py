"""`make bench`: the host-path benchmark (see bench_host.py), every part in one run.

Speed is printed, not asserted; the test fails when a path routes other captions or other
counts than the in-process baseline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.benchmark
@pytest.mark.timeout(3600)
def test_host_path_parts_side_by_side(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "tests/benchmarks/bench_host.py", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
