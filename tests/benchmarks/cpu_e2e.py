"""The CPU benchmark's end-to-end paths: `kcap run` over a folder, and `kcap up` as a hot
folder, each in its own process tree, with its CPU time by process and its peak RSS."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from shared.core.parent_death import die_with_parent
from tests.benchmarks import harness
from tests.benchmarks.cpu_plan import Plan, bench_settings

REPO = Path(__file__).resolve().parents[2]
# kcap up's warm-up file: a copy of the first image, routed before the timed part.
WARMUP = "warmup.jpg"


def kcap_run_paths(workdir: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
    runs = {}
    for label, subset in (("empty", []), ("one batch", files[: plan.e2e_batch_size]), ("all", files)):
        runs[label] = kcap_run_once(workdir / "e2e" / label.replace(" ", "_"), kosmos, clip, subset, plan)
    full = runs["all"]
    return {
        "name": "kcap run",
        "images": full["routed"],
        "wall_s": full["wall_s"],
        "cpu_s": full["cpu_s"],
        "load_avg": full["load_avg"],
        "captions": full["captions"],
        "scores": full["scores"],
        "runs": {
            k: {kk: vv for kk, vv in v.items() if kk not in ("captions", "scores")} for k, v in runs.items()
        },
    }


def _e2e_settings(base: Path, kosmos: Path, clip: Path, plan: Plan) -> tuple[Any, dict[str, str]]:
    """Fresh folders under base, and the settings and environment of a kcap run or up."""
    shutil.rmtree(base, ignore_errors=True)
    (base / "inbox").mkdir(parents=True)
    settings = bench_settings(
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
        preexec_fn=die_with_parent(),
    )


def kcap_run_once(
    base: Path,
    kosmos: Path,
    clip: Path,
    files: list[Path],
    plan: Plan,
    *,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    settings, env = _e2e_settings(base, kosmos, clip, plan)
    env.update(extra_env or {})
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
    found = _routed(settings)
    routed_at = list(found.routed_at.values())
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
        "routed": found.counts["output"] + found.counts["clip_failed"],
        "counts": found.counts,
        "captions": found.captions,
        "scores": found.scores,
        "peak_tree_rss": sampler.peak_bytes,
        "cpu_by_role": sampler.cpu_by_role(),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kcap_up_path(workdir: Path, kosmos: Path, clip: Path, files: list[Path], plan: Plan) -> dict[str, Any]:
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
    warmup = WARMUP
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
    found = _routed(settings)
    counts, captions, scores = found.counts, found.captions, found.scores
    captions.pop(warmup, None)
    scores.pop(warmup, None)
    routed_at = [at for source, at in found.routed_at.items() if source != warmup]
    cpu_by_role = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    return {
        "name": "kcap up",
        "images": len(routed_at),
        "wall_s": max(routed_at) - dropped_at,
        "cpu_s": sum(cpu_by_role.values()),
        "load_avg": (load_before, load_after),
        "captions": captions,
        "scores": scores,
        "counts": counts,  # with the warm-up file, a copy of the first image
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


class RoutedFiles(NamedTuple):
    counts: dict[str, int]  # by outcome
    captions: dict[str, str]  # by source: the caption file's text
    scores: dict[str, float]  # by source: the score that routed
    routed_at: dict[str, float]  # by source


def _routed(settings: Any) -> RoutedFiles:
    """What the folders hold: counts by outcome, and each routed source's caption, score and time."""
    found = RoutedFiles({"output": 0, "clip_failed": 0, "errors": 0}, {}, {}, {})
    for name, root in (("output", settings.output_dir), ("clip_failed", settings.clip_failed_dir)):
        for record_path in root.rglob("*.json") if root.exists() else []:
            if record_path.name.startswith("."):
                continue
            record = json.loads(record_path.read_text())
            source = record["source"]
            found.counts[name] += 1
            found.captions[source] = record_path.with_suffix(".txt").read_text().strip()
            found.scores[source] = float(record["clip_score"])
            found.routed_at[source] = float(record["routed_at"])
    if settings.errors_dir.exists():
        found.counts["errors"] = len(list(settings.errors_dir.rglob("*.error.json")))
    return found
