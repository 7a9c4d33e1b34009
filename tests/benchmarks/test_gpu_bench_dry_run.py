"""CI keeps the GPU benchmark runnable: its --dry-run (tiny models, CPU) goes through every
path of the script, without kcap's service packages (as on the lent GPU machine), so a
lent GPU's few minutes are not lost to a bug or a missing import. Its --compile row
adds a minute and a half of compiling on these cores; tests/unit/test_compile.py covers
compiling, and `gpu_bench.py --dry-run --compile` is run by hand (docs/performance.md, "GPU")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The lent GPU machine has torch, transformers and Pillow but none of kcap's service
# packages, and no internet to install them: the script must run without them.
NOT_ON_THE_GPU_HOST = ["celery", "kombu", "redis", "watchdog", "flower", "prometheus_client"]
RUN_WITHOUT_THEM = (
    "import runpy, sys\n"
    f"for name in {NOT_ON_THE_GPU_HOST!r}: sys.modules[name] = None\n"
    "sys.argv = ['gpu_bench.py', '--dry-run']\n"
    "runpy.run_path('tests/benchmarks/gpu_bench.py', run_name='__main__')\n"
)


@pytest.mark.timeout(600)
@pytest.mark.slow  # CI runs it after `make test`, which keeps to its 6 minutes
def test_gpu_bench_dry_run_prints_every_row(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OUT": str(tmp_path), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_THEM],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "DRY RUN" in table
    for row in ("(a) original loop", "| 8 ", "| 16 ", "| 32 ", "| 64 ", "(c) kcap-static decoder", "| 128 "):
        assert row in table, table
    assert "skipped" not in table and "SANITY" not in done.stderr
