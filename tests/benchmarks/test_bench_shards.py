"""`make bench`: dataset mode against the hot folder (see bench_shards.py), in one run.

Speed is printed, not asserted; the test fails when a path files other counts or other
captions than the in-process baseline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.benchmark
@pytest.mark.timeout(7200)
def test_dataset_mode_against_the_hot_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "tests/benchmarks/bench_shards.py", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=7000,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
