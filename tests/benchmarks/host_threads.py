"""(r) Does preparation spread over the cores? Engine.prepare on 12 MP photos from 1 and 2
pool threads, in one process, as Celery's pool threads run it.

Pillow decodes and resizes with the GIL released, so two threads should prepare about twice
the photos of one, as long as two cores are free. Each thread count runs twice, in turns
(1, 2, 1, 2), so that a machine that gets busier during the run weighs on both. Beside each
rate: the cores this process kept busy and the cores the machine left idle. Two threads that
keep about one core busy while another sits idle wait on each other (the GIL); with no idle
core, the machine is busy with other work and the figure says nothing about kcap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shared.core.settings import Settings
from tests.benchmarks import harness

THREAD_COUNTS = (1, 2)
TURNS = 3


def prepare_scaling(paths: Sequence[Path], settings: Settings, *, rounds: int = 1) -> dict[str, Any]:
    """Photos/s and process CPU ms per photo by thread count, the best of TURNS turns each."""
    from workers.captioning.engine import Engine

    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(paths[0].parent, paths, settings)
    work = [(job, path.read_bytes()) for job, path in zip(jobs, paths, strict=True)] * rounds
    engine.prepare(*work[0])  # warm-up: lazy imports and allocations
    runs: dict[str, list[dict[str, float]]] = {str(n): [] for n in THREAD_COUNTS}  # JSON keys
    for _ in range(TURNS):
        for threads in THREAD_COUNTS:
            with ThreadPoolExecutor(threads) as pool:
                wall, cpu, idle = time.perf_counter(), time.process_time(), _machine_idle_s()
                list(pool.map(lambda item: engine.prepare(*item), work))
                wall = time.perf_counter() - wall
                cpu, idle = time.process_time() - cpu, _machine_idle_s() - idle
            rate, cpu_ms = len(work) / wall, 1000 * cpu / len(work)
            busy, idle = cpu / wall, idle / wall
            runs[str(threads)].append({"rate": rate, "cpu_ms": cpu_ms, "busy": busy, "idle": idle})
    return {
        "photos": len(work),
        "best": {n: max(turns, key=lambda run: run["rate"]) for n, turns in runs.items()},
        "turns": runs,
    }


def _machine_idle_s() -> float:
    """Seconds of idle CPU on the whole machine since boot, all cores together (Linux)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[4]) + int(fields[5])) / ticks  # idle + iowait


def main() -> None:
    """Only this measurement, on a workspace that bench_host.py --workdir DIR has made:
    python -m tests.benchmarks.host_threads DIR"""
    import argparse
    import json

    from tests.benchmarks.bench_host import THREADS, _settings, models
    from tests.benchmarks.host_photos import THREAD_PHOTOS, scaling_lines

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    harness.set_threads(THREADS)
    paths = models(args.workdir)
    settings = _settings(paths["kosmos224"], paths["clip224"])
    twelve = sorted((args.workdir / "photos").glob("p12_*.jpg"))[:THREAD_PHOTOS]
    scaling = {
        "default": prepare_scaling(twelve, settings),
        "fast": prepare_scaling(twelve, settings.replace(fast_decode=True), rounds=4),
    }
    print("\n".join(scaling_lines(json.loads(json.dumps(scaling)))))


if __name__ == "__main__":
    main()
