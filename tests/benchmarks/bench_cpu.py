"""CPU benchmark: the original script's loop, kcap in process, and `kcap run` end to end.

    python tests/benchmarks/bench_cpu.py [--images 600] [--new-tokens 16] [--threads N]
    make bench                     # runs it through tests/benchmarks/test_bench_cpu.py

All paths caption the same JPEG files with the same "small" Kosmos-2 and "tiny" CLIP
(random weights, built here by tests/modelfactory.py), fp32, and every path generates
exactly ``--new-tokens`` tokens per image. Each path runs in a fresh child process, so its
peak RSS is its own and no path warms a cache for the next; every child gets the same torch
intra-op thread count.

(a) batch 1, the original script's loop (harness.BaselineLoop), in process;
(b) kcap's worker path in process: Engine + Batcher fed by a thread pool, batch 8 and 16,
    and batch 16 again with --compile (compile and warm-up timed apart, like model load);
(c) `kcap run` in a subprocess: embedded Redis, the real caption and route workers, files
    in a folder to files routed. Its start-up (Redis, processes, model load, the 1 s
    stability gate) is measured separately: by an empty run and by a run of one batch, and
    the figures are printed raw and net of it. The headline c/b is the steady state, first
    to last image routed, as (b) too is timed after its models are loaded and warm. The CPU
    time of every kcap process is printed by role, to show where (c)'s overhead goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests`, `shared`, `workers` importable
    sys.path.insert(0, str(REPO))

from tests.benchmarks import harness  # noqa: E402
from tests.benchmarks.cpu_e2e import kcap_run_paths, kcap_up_path  # noqa: E402
from tests.benchmarks.cpu_plan import (  # noqa: E402
    Plan,
    bench_settings,
    image_files,
    images_root,
    models_dir,
    prepare_workdir,
)
from tests.benchmarks.cpu_report import render, sanity  # noqa: E402

__all__ = ["Plan", "main", "render", "run_all", "sanity"]


# --------------------------------------------------------------------------
# One path, in a child process


def run_path(name: str, workdir: Path, plan: Plan) -> dict[str, Any]:
    harness.set_threads(plan.threads)
    kosmos, clip = models_dir(workdir)
    files = image_files(workdir)
    root = images_root(workdir)
    if name == "a":
        import torch

        loop = harness.BaselineLoop(str(kosmos), str(clip), device=torch.device("cpu"), dtype=torch.float32)
        prompt = bench_settings(kosmos, clip, plan).prompts[0]
        run = loop.run(files, root=root, prompt=prompt, max_new_tokens=plan.new_tokens)
        out: dict[str, Any] = asdict(run)
    elif name.startswith("b"):
        compiled = name.endswith("c")
        batch_size = int(name[1:].rstrip("c"))
        out = _in_process(batch_size, kosmos, clip, files, root, plan, compile=compiled)
    elif name == "c":
        out = kcap_run_paths(workdir, kosmos, clip, files, plan)
    elif name == "u":
        out = kcap_up_path(workdir, kosmos, clip, files, plan)
    else:
        raise ValueError(f"unknown path {name!r}")
    out["peak_rss_self"] = harness.peak_rss_bytes()
    out["peak_rss_children"] = harness.peak_rss_bytes(resource.RUSAGE_CHILDREN)
    import torch

    out["torch_threads"] = torch.get_num_threads()
    return out


def _in_process(
    batch_size: int, kosmos: Path, clip: Path, files: list[Path], root: Path, plan: Plan, *, compile: bool
) -> dict[str, Any]:
    from workers.captioning.engine import Engine

    settings = bench_settings(kosmos, clip, plan).replace(batch_size=batch_size, compile=compile)
    started = time.perf_counter()
    engine = Engine.load(settings, eager_scorer=True)
    load_s = time.perf_counter() - started
    jobs = harness.jobs_from_files(root, files, settings)
    harness.check_fixed_length(engine, jobs[0], new_tokens=plan.new_tokens)
    run = harness.kcap_batched(
        engine,
        jobs,
        batch_size=batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        warmup=jobs[:batch_size],
    )
    run.load_s = load_s
    return asdict(run)


# --------------------------------------------------------------------------
# All paths, side by side


def run_all(workdir: Path, plan: Plan, *, echo: bool = True) -> dict[str, dict[str, Any]]:
    """Build the workspace, run every path in its own child process, return their reports."""
    started = time.perf_counter()
    prepare_workdir(workdir, plan)
    if echo:
        print(f"bench_cpu: workspace ready in {time.perf_counter() - started:.0f}s ({workdir})", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in plan.paths:
        path_started = time.perf_counter()
        results[name] = harness.run_child(
            Path(__file__).resolve(),
            ["--one", name, "--workdir", str(workdir), *_plan_args(plan)],
            workdir / f"path-{name}.log",
            env=harness.thread_env(plan.threads),
        )
        if echo:
            r = results[name]
            print(
                f"bench_cpu: path {name} done in {time.perf_counter() - path_started:.0f}s: "
                f"{r['images']} images in {r['wall_s']:.1f}s",
                flush=True,
            )
    return results


def _plan_args(plan: Plan) -> list[str]:
    return [
        *([] if plan.compile else ["--no-compile"]),
        "--images",
        str(plan.images),
        "--size",
        f"{plan.width}x{plan.height}",
        "--new-tokens",
        str(plan.new_tokens),
        "--batch-sizes",
        ",".join(map(str, plan.batch_sizes)),
        "--e2e-batch-size",
        str(plan.e2e_batch_size),
        "--threads",
        str(plan.threads),
    ]


# --------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=Plan.images)
    parser.add_argument("--size", default=f"{Plan.width}x{Plan.height}", help="WxH of the images")
    parser.add_argument("--new-tokens", type=int, default=Plan.new_tokens)
    parser.add_argument("--batch-sizes", default=",".join(map(str, Plan.batch_sizes)))
    parser.add_argument("--e2e-batch-size", type=int, default=Plan.e2e_batch_size)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-compile", action="store_true", help="skip the --compile path")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    width, height = (int(v) for v in args.size.lower().split("x"))
    kwargs: dict[str, Any] = {
        "images": args.images,
        "width": width,
        "height": height,
        "new_tokens": args.new_tokens,
        "batch_sizes": tuple(int(v) for v in args.batch_sizes.split(",") if v),
        "e2e_batch_size": args.e2e_batch_size,
        "compile": not args.no_compile,
    }
    if args.threads:
        kwargs["threads"] = args.threads
    return Plan(**kwargs)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    plan = plan_from(args)
    if args.one:
        result = run_path(args.one, args.workdir, plan)
        args.json_out.write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="kcap-bench-cpu-") as temp:
        workdir = args.workdir or Path(temp)
        results = run_all(workdir, plan)
        print(render(results, plan))
        problems = sanity(results, plan)
        for problem in problems:
            print(f"SANITY: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
