"""CPU benchmark: the original script's loop, kcap in process, and `kcap run` end to end.

    python tests/benchmarks/bench_cpu.py [--images 200] [--new-tokens 16] [--threads N]
    make bench                     # runs it through tests/benchmarks/test_bench_cpu.py

All paths caption the same JPEG files with the same "small" Kosmos-2 and "tiny" CLIP
(random weights, built here by tests/modelfactory.py), fp32, and every path generates
exactly ``--new-tokens`` tokens per image. Each path runs in a fresh child process, so its
peak RSS is its own and no path warms a cache for the next; every child gets the same torch
intra-op thread count.

(a) batch 1, the original script's loop (harness.BaselineLoop), in process;
(b) kcap's worker path in process: Engine + Batcher fed by a thread pool, batch 8 and 16;
(c) `kcap run` in a subprocess: embedded Redis, the real caption and route workers, files
    in a folder to files routed. Its start-up (Redis, processes, model load, the 1 s
    stability gate) is measured separately: by an empty run and by a run of one batch, and
    the figures are printed raw and net of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests`, `shared`, `workers` importable
    sys.path.insert(0, str(REPO))

from tests.benchmarks import harness  # noqa: E402


@dataclass(frozen=True)
class Plan:
    images: int = 200
    width: int = 320
    height: int = 240
    new_tokens: int = 16
    batch_sizes: tuple[int, ...] = (8, 16)
    e2e_batch_size: int = 16  # kcap's default batch size
    threads: int = field(default_factory=lambda: _default_threads())

    @property
    def paths(self) -> list[str]:
        return ["a", *(f"b{bs}" for bs in self.batch_sizes), "c"]


def _default_threads() -> int:
    import torch

    return int(os.environ.get("KCAP_BENCH_THREADS") or torch.get_num_threads())


# --------------------------------------------------------------------------
# Workspace: models and images, built once per benchmark run


def models_dir(workdir: Path) -> tuple[Path, Path]:
    return workdir / "models" / "kosmos2-small", workdir / "models" / "clip-tiny"


def images_root(workdir: Path) -> Path:
    return workdir / "images"


def prepare_workdir(workdir: Path, plan: Plan) -> None:
    from tests.modelfactory import build_clip, build_kosmos2

    kosmos, clip = models_dir(workdir)
    if not (kosmos / "config.json").exists():
        build_kosmos2(kosmos, preset="small")
    if not (clip / "config.json").exists():
        build_clip(clip, preset="tiny")
    root = images_root(workdir)
    if len(list(root.glob("*.jpg"))) != plan.images:
        shutil.rmtree(root, ignore_errors=True)
        harness.write_images(root, plan.images, size=(plan.width, plan.height))


def image_files(workdir: Path) -> list[Path]:
    return sorted(images_root(workdir).glob("*.jpg"))


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
        prompt = _settings(kosmos, clip, plan).prompts[0]
        run = loop.run(files, root=root, prompt=prompt, max_new_tokens=plan.new_tokens)
        out: dict[str, Any] = asdict(run)
    elif name.startswith("b"):
        out = _in_process(int(name[1:]), kosmos, clip, files, root, plan)
    elif name == "c":
        out = _end_to_end(workdir, kosmos, clip, files, plan)
    else:
        raise ValueError(f"unknown path {name!r}")
    out["peak_rss_self"] = harness.peak_rss_bytes()
    out["peak_rss_children"] = harness.peak_rss_bytes(resource.RUSAGE_CHILDREN)
    import torch

    out["torch_threads"] = torch.get_num_threads()
    return out


def _settings(kosmos: Path, clip: Path, plan: Plan, **more: Any) -> Any:
    """kcap's defaults (prompt, cleanup, greedy), the benchmark models and token count."""
    from shared.settings import Settings

    return Settings(
        caption_model=str(kosmos), clip_model=str(clip), max_new_tokens=plan.new_tokens, gpus="cpu", **more
    )


def _in_process(
    batch_size: int, kosmos: Path, clip: Path, files: list[Path], root: Path, plan: Plan
) -> dict[str, Any]:
    from workers.engine import Engine

    settings = _settings(kosmos, clip, plan).replace(batch_size=batch_size)
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


def _end_to_end(workdir: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
    runs = {}
    for label, subset in (("empty", []), ("one batch", files[: plan.e2e_batch_size]), ("all", files)):
        runs[label] = _kcap_run(workdir / "e2e" / label.replace(" ", "_"), kosmos, clip, subset, plan)
    full = runs["all"]
    return {
        "name": "kcap run",
        "images": full["routed"],
        "wall_s": full["wall_s"],
        "cpu_s": full["cpu_s"],
        "load_avg": full["load_avg"],
        "captions": full["captions"],
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "captions"} for k, v in runs.items()},
    }


def _kcap_run(base: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
    shutil.rmtree(base, ignore_errors=True)
    inbox = base / "inbox"
    inbox.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, inbox / path.name)
    settings = _settings(
        kosmos,
        clip,
        plan,
        input_dir=inbox,
        output_dir=base / "captioned",
        clip_failed_dir=base / "clip_failed",
        errors_dir=base / "errors",
        state_dir=base / "state",
        batch_size=plan.e2e_batch_size,
    )
    env = {
        **os.environ,
        **settings.to_env(),
        **harness.thread_env(plan.threads),
        "PYTHONPATH": str(REPO),
    }
    log_path = base / "kcap-run.log"
    with log_path.open("wb") as log:
        started_at = time.time()  # routed_at in the records is wall-clock time
        cpu_before, load_before = _children_cpu_s(), os.getloadavg()[0]
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli.main", "run"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=harness.die_with_parent,
        )
        with harness.TreeRssSampler(process.pid) as sampler:
            try:
                returncode = process.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                raise
        wall_s = time.perf_counter() - started
        ended_at = time.time()
        cpu_s, load_after = _children_cpu_s() - cpu_before, os.getloadavg()[0]
    if returncode != 0:
        raise RuntimeError(f"kcap run exited {returncode}; log:\n{log_path.read_text()[-4000:]}")
    counts, captions, routed_at = _routed(settings)
    phases = {}
    if routed_at:
        phases = {
            "start_to_first_routed_s": min(routed_at) - started_at,
            "first_to_last_routed_s": max(routed_at) - min(routed_at),
            "last_routed_to_exit_s": ended_at - max(routed_at),
        }
    return {
        "phases": phases,
        "files": len(files),
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "load_avg": (load_before, load_after),
        "routed": counts["output"] + counts["clip_failed"],
        "counts": counts,
        "captions": captions,
        "peak_tree_rss": sampler.peak_bytes,
        "cpu_by_role": sampler.cpu_by_role(),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _routed(settings: Any) -> tuple[dict[str, int], dict[str, str], list[float]]:
    counts = {"output": 0, "clip_failed": 0, "errors": 0}
    captions: dict[str, str] = {}
    routed_at: list[float] = []
    for name, root in (("output", settings.output_dir), ("clip_failed", settings.clip_failed_dir)):
        for record_path in root.rglob("*.json") if root.exists() else []:
            if record_path.name.startswith("."):
                continue
            record = json.loads(record_path.read_text())
            counts[name] += 1
            captions[record["source"]] = record_path.with_suffix(".txt").read_text().strip()
            routed_at.append(float(record["routed_at"]))
    if settings.errors_dir.exists():
        counts["errors"] = len(list(settings.errors_dir.rglob("*.error.json")))
    return counts, captions, routed_at


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
        json_out = workdir / f"path-{name}.json"
        log_path = workdir / f"path-{name}.log"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one",
            name,
            "--workdir",
            str(workdir),
            "--json-out",
            str(json_out),
            *_plan_args(plan),
        ]
        env = {**os.environ, **harness.thread_env(plan.threads), "PYTHONPATH": str(REPO)}
        path_started = time.perf_counter()
        with log_path.open("wb") as log:
            done = subprocess.run(
                argv,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                preexec_fn=harness.die_with_parent,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"path {name} failed ({done.returncode}); log:\n{log_path.read_text()[-6000:]}"
            )
        results[name] = json.loads(json_out.read_text())
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


def render(results: dict[str, dict[str, Any]], plan: Plan) -> str:
    a = results["a"]
    c = results["c"]
    runs = c["runs"]
    base_ips = a["images"] / a["wall_s"]
    rows: list[list[object]] = []

    def ips(images: float, wall_s: float) -> float:
        return images / wall_s if wall_s > 0 else float("nan")

    def row(
        label: str, batch: object, images: float, wall_s: float, cpu_s: float | None, load: str, rss: str
    ) -> float:
        speed = ips(images, wall_s)
        rows.append(
            [
                label,
                batch,
                f"{images:.0f}",
                f"{wall_s:.1f}",
                f"{speed:.2f}",
                f"{speed / base_ips:.2f}x",
                f"{1000 * cpu_s / images:.0f}" if images and cpu_s is not None else "-",
                load,
                rss,
            ]
        )
        return speed

    def load_of(result: dict[str, Any]) -> str:
        before, after = result["load_avg"]
        return f"{before:.1f} / {after:.1f}"

    row(
        "(a) original loop, in process",
        1,
        a["images"],
        a["wall_s"],
        a["cpu_s"],
        load_of(a),
        harness.mib(a["peak_rss_self"]),
    )
    b_speed = {}
    for bs in plan.batch_sizes:
        b = results[f"b{bs}"]
        label = "(b) kcap Engine+Batcher, in process"
        b_speed[bs] = row(
            label, bs, b["images"], b["wall_s"], b["cpu_s"], load_of(b), harness.mib(b["peak_rss_self"])
        )
    tree = harness.mib(runs["all"]["peak_tree_rss"])
    rss_c = f"{harness.mib(c['peak_rss_children'])} (tree {tree})"
    e2e_bs = plan.e2e_batch_size
    one = runs["one batch"]
    raw = row(
        "(c) kcap run, raw: start to exit", e2e_bs, c["images"], c["wall_s"], c["cpu_s"], load_of(c), rss_c
    )
    net = row(
        "(c) kcap run, net of an empty run",
        e2e_bs,
        c["images"],
        c["wall_s"] - runs["empty"]["wall_s"],
        c["cpu_s"] - runs["empty"]["cpu_s"],
        load_of(c),
        rss_c,
    )
    marginal = row(
        f"(c) kcap run, marginal ({c['images']} - {one['routed']} images)",
        e2e_bs,
        c["images"] - one["routed"],
        c["wall_s"] - one["wall_s"],
        c["cpu_s"] - one["cpu_s"],
        load_of(c),
        rss_c,
    )
    phases = runs["all"]["phases"]
    steady = 0.0
    if phases:
        # The first batch routes at once; the rest route between first and last.
        steady = row(
            "(c) kcap run, steady: first -> last routed",
            e2e_bs,
            c["images"] - e2e_bs,
            phases["first_to_last_routed_s"],
            None,
            load_of(c),
            rss_c,
        )
    headers = [
        "path",
        "batch",
        "images",
        "wall s",
        "images/s",
        "vs (a)",
        "CPU ms/image",
        "load avg",
        "peak RSS MiB",
    ]
    lines = [
        f"CPU benchmark: {plan.images} JPEG images {plan.width}x{plan.height}, Kosmos-2 'small' + "
        f"CLIP 'tiny' (random weights), fp32, exactly {plan.new_tokens} new tokens per image, "
        f"torch intra-op threads = {plan.threads} in every process",
        "",
        harness.markdown_table(headers, rows),
        "",
    ]
    b_ref = b_speed.get(e2e_bs, max(b_speed.values()))
    for bs, speed in b_speed.items():
        lines.append(f"b/a (batch {bs}): {speed / base_ips:.2f}x")
    lines.append(
        f"c/b (batch {e2e_bs}): raw {raw / b_ref:.2f}, net of empty run {net / b_ref:.2f}, "
        f"marginal {marginal / b_ref:.2f}, steady {steady / b_ref:.2f}   (target >= 0.9)"
    )
    lines.append(
        f"kcap run start-up: empty run {runs['empty']['wall_s']:.1f}s; "
        f"one batch ({runs['one batch']['routed']} images) {runs['one batch']['wall_s']:.1f}s"
    )
    if phases:
        lines.append(
            f"kcap run phases ({c['images']} images): start -> first routed "
            f"{phases['start_to_first_routed_s']:.1f}s, first -> last routed "
            f"{phases['first_to_last_routed_s']:.1f}s, "
            f"last routed -> exit {phases['last_routed_to_exit_s']:.1f}s"
        )
    lines.append(
        "model load incl. transformers import (not in the timed figures): "
        + ", ".join(
            f"{name} {results[name]['load_s']:.1f}s" for name in ["a", *(f"b{bs}" for bs in plan.batch_sizes)]
        )
    )
    lines.append(
        "batches run: "
        + "; ".join(
            f"b{bs}: {harness.histogram(results[f'b{bs}']['batch_sizes'])}" for bs in plan.batch_sizes
        )
    )
    same = []
    for name in [*(f"b{bs}" for bs in plan.batch_sizes), "c"]:
        equal, common = harness.agreement(a["captions"], results[name]["captions"])
        same.append(f"{name} {equal}/{common}")
    lines.append("captions identical to (a): " + ", ".join(same))
    lines.append(
        f"kcap run CPU time by process ({c['images']} images, start to exit): "
        + ", ".join(
            f"{role} {seconds:.1f}s ({1000 * seconds / max(1, c['images']):.0f} ms/image)"
            for role, seconds in sorted(runs["all"]["cpu_by_role"].items(), key=lambda kv: -kv[1])
        )
    )
    counts = runs["all"]["counts"]
    lines.append(
        f"(c) routed: output {counts['output']}, clip_failed {counts['clip_failed']}, "
        f"errors {counts['errors']}"
    )
    lines.append(
        "peak RSS: (a), (b) ru_maxrss of their own process; (c) ru_maxrss of the largest kcap "
        "process (RUSAGE_CHILDREN), tree = summed RSS of kcap run and all its children, sampled; "
        "CPU ms/image: CPU time of the timed part, all threads ((c): all kcap processes); "
        "load avg: the machine's 1-minute load average before / after (others share these cores)"
    )
    return "\n".join(lines)


def sanity(results: dict[str, dict[str, Any]], plan: Plan) -> list[str]:
    """What must hold whatever the speed: every image captioned, routed once, full length."""
    problems = []
    for name in plan.paths:
        r = results[name]
        if r["images"] != plan.images or len(r["captions"]) != plan.images:
            problems.append(f"{name}: {r['images']} images, {len(r['captions'])} captions of {plan.images}")
        counts = harness.word_counts(r["captions"])
        if counts != {plan.new_tokens}:
            problems.append(f"{name}: caption word counts {sorted(counts)}, expected {plan.new_tokens}")
    for label, run in results["c"]["runs"].items():
        if run["routed"] != run["files"] or run["counts"]["errors"]:
            problems.append(f"kcap run ({label}): {run['counts']} for {run['files']} files")
    return problems


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
