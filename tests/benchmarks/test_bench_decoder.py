"""`make bench`: the decode loop, generate against kcap's static decoder (see bench_decoder.py).

Speed is printed, not asserted (the machines are shared and noisy); the test fails when any
caption or entity list of the static decoder differs from generate's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_decoder


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_decoder_against_generate(tmp_path: Path) -> None:
    rows = bench_decoder.run_all(tmp_path, images=256, slots=64, new_tokens=128, threads=1)
    print()
    print(bench_decoder.render(rows))
    assert sum(row.mismatches for row in rows) == 0
