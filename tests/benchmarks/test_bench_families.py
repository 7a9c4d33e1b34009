"""`make bench`: each caption and scorer family's tiny model side by side (see bench_families.py).

Speed is printed, not asserted; the run fails when a repeated pass of a family writes other
captions (or scores) than its first pass.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_families_side_by_side() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_families"], cwd=REPO, capture_output=True, text=True
    )
    print()
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
