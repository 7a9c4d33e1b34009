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
import os
import resource
import shutil
import signal
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
    # 600 rather than the 200 the issue asks at least: at about 20 images/s, 200 images
    # leave (c) a steady window of some 8 s, which its start-up (the route worker's imports,
    # the producer hashing the backlog) still overlaps.
    images: int = 600
    width: int = 320
    height: int = 240
    new_tokens: int = 16
    batch_sizes: tuple[int, ...] = (8, 16)
    e2e_batch_size: int = 16  # kcap's default batch size
    compile: bool = True  # also run (b) at e2e_batch_size with --compile
    threads: int = field(default_factory=lambda: _default_threads())

    @property
    def paths(self) -> list[str]:
        compiled = [f"b{self.e2e_batch_size}c"] if self.compile else []
        return ["a", *self.b_paths, *compiled, "c", "u"]

    @property
    def b_paths(self) -> list[str]:
        return [f"b{bs}" for bs in self.batch_sizes]


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
        compiled = name.endswith("c")
        batch_size = int(name[1:].rstrip("c"))
        out = _in_process(batch_size, kosmos, clip, files, root, plan, compile=compiled)
    elif name == "c":
        out = _end_to_end(workdir, kosmos, clip, files, plan)
    elif name == "u":
        out = _kcap_up(workdir, kosmos, clip, files, plan)
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
    batch_size: int, kosmos: Path, clip: Path, files: list[Path], root: Path, plan: Plan, *, compile: bool
) -> dict[str, Any]:
    from workers.engine import Engine

    settings = _settings(kosmos, clip, plan).replace(batch_size=batch_size, compile=compile)
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


def _e2e_settings(base: Path, kosmos: Path, clip: Path, plan: Plan) -> tuple[Any, dict[str, str]]:
    """Fresh folders under base, and the settings and environment of a kcap run or up."""
    shutil.rmtree(base, ignore_errors=True)
    (base / "inbox").mkdir(parents=True)
    settings = _settings(
        kosmos,
        clip,
        plan,
        input_dir=base / "inbox",
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
    return settings, env


def _start_kcap(args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """A kcap command in its own session (its tree can be signalled as one), output to log."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", *args],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=harness.die_with_parent,
    )


def _kcap_run(base: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
    settings, env = _e2e_settings(base, kosmos, clip, plan)
    for path in files:
        shutil.copy2(path, settings.input_dir / path.name)
    log_path = base / "kcap-run.log"
    with log_path.open("wb") as log:
        started_at = time.time()  # routed_at in the records is wall-clock time
        cpu_before, load_before = _children_cpu_s(), os.getloadavg()[0]
        started = time.perf_counter()
        process = _start_kcap(["run"], env, log)
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
    counts, captions, routed = _routed(settings)
    routed_at = list(routed.values())
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


def _kcap_up(workdir: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
    """The hot folder: `kcap up` running and warm, then every file lands in its folder at once.

    One warm-up file goes first, so the timed part starts with the workers up and the
    models loaded, as in a long-running `kcap up`; the files are then renamed into the
    watched folder (complete files appearing at once) and timed until the last is routed.
    The stability gate (1 s) and the watcher's events are in the timed part.
    """
    base = workdir / "e2e" / "up"
    settings, env = _e2e_settings(base, kosmos, clip, plan)
    staging = base / "staging"
    staging.mkdir()
    for path in files:
        shutil.copy2(path, staging / path.name)
    warmup = "warmup.jpg"
    log_path = base / "kcap-up.log"
    with log_path.open("wb") as log:
        process = _start_kcap(["up", "--no-flower"], env, log)
        try:
            with harness.TreeRssSampler(process.pid) as sampler:
                shutil.copy2(files[0], staging / warmup)
                os.rename(staging / warmup, settings.input_dir / warmup)
                _wait_routed(settings, 1, process, log_path, timeout_s=600)
                cpu_before = sampler.cpu_by_role()
                load_before = os.getloadavg()[0]
                dropped_at = time.time()
                for path in files:
                    os.rename(staging / path.name, settings.input_dir / path.name)
                _wait_routed(settings, len(files) + 1, process, log_path, timeout_s=1800)
                last_seen = time.time()
                load_after = os.getloadavg()[0]
                cpu_after = sampler.cpu_by_role()
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    counts, captions, routed = _routed(settings)
    captions.pop(warmup, None)
    routed_at = [at for source, at in routed.items() if source != warmup]
    cpu_by_role = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    return {
        "name": "kcap up",
        "images": len(routed_at),
        "wall_s": max(routed_at) - dropped_at,
        "cpu_s": sum(cpu_by_role.values()),
        "load_avg": (load_before, load_after),
        "captions": captions,
        "counts": counts,
        "phases": {
            "drop_to_first_routed_s": min(routed_at) - dropped_at,
            "first_to_last_routed_s": max(routed_at) - min(routed_at),
            "poll_lag_s": last_seen - max(routed_at),
        },
        "cpu_by_role": cpu_by_role,
        "peak_tree_rss": sampler.peak_bytes,
    }


def _wait_routed(
    settings: Any, count: int, process: subprocess.Popen[bytes], log: Path, *, timeout_s: float
) -> None:
    roots = [settings.output_dir, settings.clip_failed_dir, settings.errors_dir]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(
            1 for root in roots if root.exists() for p in root.rglob("*.json") if not p.name.startswith(".")
        )
        if done >= count:
            return
        if process.poll() is not None:
            raise RuntimeError(f"kcap up exited {process.returncode}; log:\n{log.read_text()[-4000:]}")
        time.sleep(0.25)
    raise RuntimeError(
        f"kcap up: fewer than {count} routed after {timeout_s:.0f}s; log:\n{log.read_text()[-4000:]}"
    )


def _routed(settings: Any) -> tuple[dict[str, int], dict[str, str], dict[str, float]]:
    """Counts by outcome, and each routed source's caption and routed_at time."""
    counts = {"output": 0, "clip_failed": 0, "errors": 0}
    captions: dict[str, str] = {}
    routed_at: dict[str, float] = {}
    for name, root in (("output", settings.output_dir), ("clip_failed", settings.clip_failed_dir)):
        for record_path in root.rglob("*.json") if root.exists() else []:
            if record_path.name.startswith("."):
                continue
            record = json.loads(record_path.read_text())
            counts[name] += 1
            captions[record["source"]] = record_path.with_suffix(".txt").read_text().strip()
            routed_at[record["source"]] = float(record["routed_at"])
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
    compiled_name = f"b{plan.e2e_batch_size}c"
    compiled_speed = None
    if compiled_name in results:
        b = results[compiled_name]
        compiled_speed = row(
            "(b) kcap Engine+Batcher, in process, --compile",
            plan.e2e_batch_size,
            b["images"],
            b["wall_s"],
            b["cpu_s"],
            load_of(b),
            harness.mib(b["peak_rss_self"]),
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
    hot = None
    if "u" in results:
        u = results["u"]
        hot = row(
            "(c) kcap up, hot folder: files dropped -> last routed",
            e2e_bs,
            u["images"],
            u["wall_s"],
            u["cpu_s"],
            load_of(u),
            f"tree {harness.mib(u['peak_tree_rss'])}",
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
    if compiled_speed is not None:
        lines.append(
            f"--compile (batch {e2e_bs}): {compiled_speed / b_ref:.2f}x the eager (b); "
            f"its compile and warm-up at load took {results[compiled_name]['load_s']:.1f}s "
            f"(eager load {results[f'b{e2e_bs}']['load_s']:.1f}s)"
        )
    lines.append(
        f"c/b (batch {e2e_bs}): raw {raw / b_ref:.2f}, net of empty run {net / b_ref:.2f}, "
        f"marginal {marginal / b_ref:.2f}, steady {steady / b_ref:.2f}"
        + (f", hot folder (kcap up) {hot / b_ref:.2f}" if hot is not None else "")
        + "   (target >= 0.9)"
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
    b_compiled = [compiled_name] if compiled_name in results else []
    lines.append(
        "model load incl. transformers import (not in the timed figures): "
        + ", ".join(f"{name} {results[name]['load_s']:.1f}s" for name in ["a", *plan.b_paths, *b_compiled])
    )
    lines.append(
        "batches run: "
        + "; ".join(
            f"{name}: {harness.histogram(results[name]['batch_sizes'])}"
            for name in [*plan.b_paths, *b_compiled]
        )
    )
    same = []
    for name in [*plan.b_paths, *b_compiled, "c", *(["u"] if "u" in results else [])]:
        equal, common = harness.agreement(a["captions"], results[name]["captions"])
        same.append(f"{name} {equal}/{common}")
    lines.append("captions identical to (a): " + ", ".join(same))
    lines.append(
        _cpu_line(f"kcap run CPU time by process ({c['images']} images, start to exit)", runs["all"])
    )
    if "u" in results:
        u = results["u"]
        lines.append(
            f"kcap up phases ({u['images']} images): dropped -> first routed "
            f"{u['phases']['drop_to_first_routed_s']:.1f}s (the 1 s stability gate, one batch), "
            f"first -> last routed {u['phases']['first_to_last_routed_s']:.1f}s"
        )
        lines.append(_cpu_line(f"kcap up CPU time by process ({u['images']} images, timed part)", u))
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


def _cpu_line(title: str, run: dict[str, Any]) -> str:
    images = max(1, run.get("images", run.get("routed", 0)))
    parts = [
        f"{role.split(' ')[0]} {seconds:.1f}s ({1000 * seconds / images:.0f} ms/image)"
        for role, seconds in sorted(run["cpu_by_role"].items(), key=lambda kv: -kv[1])
    ]
    return f"{title}: " + ", ".join(parts)


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
    if "u" in results and results["u"]["counts"]["errors"]:
        problems.append(f"kcap up: {results['u']['counts']}")
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
