"""`make bench`: the CPU benchmark, all paths side by side in one run (see bench_cpu.py).

Speed is printed, not asserted (the machines are shared and noisy); the test fails only
when a path loses, duplicates or shortens a caption, or `kcap run` routes something wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_cpu


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_cpu_paths_side_by_side(tmp_path: Path) -> None:
    plan = bench_cpu.Plan()
    results = bench_cpu.run_all(tmp_path, plan)
    print()
    print(bench_cpu.render(results, plan))
    assert bench_cpu.sanity(results, plan) == []
