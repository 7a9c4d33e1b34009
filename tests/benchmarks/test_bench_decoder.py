"""`make bench`: the decode loop, generate against kcap's static decoder (see bench_decoder.py).

Speed is printed, not asserted (the machines are shared and noisy); the test fails when any
caption or entity list of the static decoder differs from generate's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_decoder
from tests.benchmarks.bench_stream import run_pool_workload


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_decoder_against_generate(tmp_path: Path) -> None:
    rows = bench_decoder.run_all(tmp_path, images=256, slots=64, new_tokens=128, threads=1)
    print()
    print(bench_decoder.render(rows))
    assert sum(row.mismatches for row in rows) == 0


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_streamed_against_per_batch(tmp_path: Path) -> None:
    """Images arriving from a pool of threads: every caption, per batch and streamed,
    equals generate's."""
    table, mismatches = run_pool_workload(tmp_path, images=256, new_tokens=128, threads=1)
    print()
    print(table)
    assert mismatches == 0
