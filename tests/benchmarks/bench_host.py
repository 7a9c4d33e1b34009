"""The host path at GPU speed: what kcap costs around a near-null model (issue #13).

On a GPU the model is fast, and the work around it sets the pace. This benchmark makes the
model near-null (the tiny models, 1 new token, batch 64: what a GPU looks like from the host)
and measures the rest, each part in its own child process:

- (q) the same small images in process: decode, both processors and the model at batch 64
  (Engine + Batcher on a thread pool, the worker's own path): the baseline;
- (p) kcap end to end over the same images: `kcap run` (net of an empty run's start-up and
  shutdown) and the hot folder (`kcap up` warm, files dropped at once). (p) - (q), in CPU ms
  per image, is the host path's overhead;
- (r) real-size photos (12 and 24 MP JPEGs, 12 MP PNGs), each way on each photo in turn in
  process: the original script's decode and both processors, the floor under any
  bit-identical way (one full decode and each processor's resize alone), Engine.prepare and
  --fast-decode at two short sides; what a 12 MP JPEG adds to a whole `kcap run` process
  tree (net of the same run on small images, twice); Engine.prepare from 1 and 2 pool
  threads; and the captions --fast-decode changes (host_photos.py);
- (s) the route worker alone, fed a full route queue, at this disk's fsync speed and with a
  slow one (5 ms more per fsync, as network storage).

It prints images/s, CPU ms per image and memory with ratios against each part's baseline,
and it fails (exit 1) when a path routes other captions or other counts than it should.

    python tests/benchmarks/bench_host.py [--images 2000] [--only p,q,r,s] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import harness
from tests.benchmarks.cpu_plan import Plan
from tests.benchmarks.host_inputs import photos, small_pngs
from tests.benchmarks.host_photos import report as photo_report

THREADS = 1  # the model on one core, as a GPU host's spare cores see it
BATCH = 64
NEW_TOKENS = 1


@dataclass(frozen=True)
class HostPlan:
    images: int = 2000  # small images for (p) and (q)
    photos_12mp: int = 30
    photos_24mp: int = 16
    photos_png: int = 4
    e2e_photos: int = 24  # 12 MP JPEGs through `kcap run` for (r)
    route_images: int = 2000
    slow_route_images: int = 400
    slow_fsync_ms: float = 5.0
    route_batch: int = 16  # results per route message: a caption batch at the default --batch-size

    def e2e_plan(self, images: int) -> Plan:
        return Plan(
            images=images,
            width=64,
            height=64,
            new_tokens=NEW_TOKENS,
            batch_sizes=(BATCH,),
            e2e_batch_size=BATCH,
            compile=False,
            threads=THREADS,
        )


# -- the workspace ------------------------------------------------------------------------


def models(workdir: Path) -> dict[str, Path]:
    return {
        "kosmos": workdir / "models" / "kosmos2-tiny",
        "clip": workdir / "models" / "clip-tiny",
        "kosmos224": workdir / "models" / "kosmos2-tiny224",
        "clip224": workdir / "models" / "clip-tiny224",
        "kosmos_small": workdir / "models" / "kosmos2-small",
    }


def prepare(workdir: Path, plan: HostPlan) -> None:
    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    paths = models(workdir)
    for name, preset in (("kosmos", "tiny"), ("kosmos224", "tiny224"), ("kosmos_small", "small")):
        if not (paths[name] / "config.json").exists():
            build_kosmos2(paths[name], preset=preset)
    for name, preset in (("clip", "tiny"), ("clip224", "tiny224")):
        if not (paths[name] / "config.json").exists():
            build_clip(paths[name], preset=preset)
    small_pngs(workdir / "small", plan.images)
    photos(workdir / "photos", twelve=plan.photos_12mp, twenty_four=plan.photos_24mp, pngs=plan.photos_png)


def _settings(kosmos: Path, clip: Path, **more: Any) -> Any:
    from shared.core.settings import Settings

    return Settings(
        caption_model=str(kosmos),
        clip_model=str(clip),
        max_new_tokens=NEW_TOKENS,
        batch_size=BATCH,
        gpus="cpu",
        **more,
    )


# -- each part, in a child process -----------------------------------------------------------


def part_q(workdir: Path, plan: HostPlan) -> dict[str, Any]:
    from workers.captioning.engine import Engine

    paths = models(workdir)
    settings = _settings(paths["kosmos"], paths["clip"])
    files = small_pngs(workdir / "small", plan.images)
    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(workdir / "small", files, settings)
    run = harness.kcap_batched(engine, jobs, batch_size=BATCH, warmup=jobs[:BATCH])
    return asdict(run)


def part_p(workdir: Path, plan: HostPlan) -> dict[str, Any]:
    from tests.benchmarks.cpu_e2e import kcap_run_once, kcap_up_path

    paths = models(workdir)
    files = small_pngs(workdir / "small", plan.images)
    e2e = plan.e2e_plan(len(files))
    empty = kcap_run_once(workdir / "p" / "empty", paths["kosmos"], paths["clip"], [], e2e)
    full = kcap_run_once(workdir / "p" / "run", paths["kosmos"], paths["clip"], files, e2e)
    up = kcap_up_path(workdir / "p", paths["kosmos"], paths["clip"], files, e2e)
    return {"empty": _drop_captions(empty), "run": full, "up": up}


def part_r(workdir: Path, plan: HostPlan) -> dict[str, Any]:
    from tests.benchmarks.host_photos import measure

    files = photos(
        workdir / "photos", twelve=plan.photos_12mp, twenty_four=plan.photos_24mp, pngs=plan.photos_png
    )
    twelve = [f for f in files if f.name.startswith("p12") and f.suffix == ".jpg"][: plan.e2e_photos]
    small = small_pngs(workdir / "small", plan.images)
    paths = models(workdir)
    settings = _settings(paths["kosmos224"], paths["clip224"])
    return measure(workdir, paths, settings, files, twelve, small, plan.e2e_plan)


def part_s(workdir: Path, plan: HostPlan) -> dict[str, Any]:
    from tests.benchmarks.host_route import route_alone

    files = small_pngs(workdir / "small", plan.images)
    runs: dict[str, Any] = {}
    # One message per image (how results travelled before, and still do from the producer)
    # beside one per caption batch, in the same run.
    for per_message in (1, plan.route_batch):
        runs[f"disk/{per_message}"] = route_alone(
            workdir / "s" / f"disk-{per_message}", files[: plan.route_images], per_message=per_message
        )
        runs[f"slow/{per_message}"] = route_alone(
            workdir / "s" / f"slow-{per_message}",
            files[: plan.slow_route_images],
            fsync_delay_ms=plan.slow_fsync_ms,
            per_message=per_message,
        )
    return runs


PARTS = {"q": part_q, "p": part_p, "r": part_r, "s": part_s}


def _drop_captions(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "captions"}


# -- the report -----------------------------------------------------------------------------


def _per_image_ms(cpu_s: float, images: int) -> float:
    return 1000 * cpu_s / images if images else 0.0


def _row(label: str, images: int, rate: float, base_rate: float, cpu_ms: float, rss: str) -> list[object]:
    return [label, images, f"{rate:.1f}", f"{rate / base_rate:.2f}x", f"{cpu_ms:.1f}", rss]


def render(results: dict[str, dict[str, Any]], plan: HostPlan) -> tuple[str, list[str]]:
    """The table, and the problems that make the benchmark fail."""
    rows: list[list[object]] = []
    problems: list[str] = []
    lines: list[str] = []
    q, p = results.get("q"), results.get("p")
    if q is not None:
        q_rate, q_ms = q["images"] / q["wall_s"], _per_image_ms(q["cpu_s"], q["images"])
        rows.append(
            _row(
                "(q) in process, batch 64", q["images"], q_rate, q_rate, q_ms, harness.mib(q["peak_rss_self"])
            )
        )
    if p is not None and q is not None:
        run, empty, up = p["run"], p["empty"], p["up"]
        run_ms = _per_image_ms(run["cpu_s"] - empty["cpu_s"], run["routed"])
        up_ms = _per_image_ms(up["cpu_s"], up["images"])
        steady = run["phases"].get("first_to_last_routed_s") or run["wall_s"]
        run_rate, up_rate = (run["routed"] - 1) / steady, up["images"] / up["wall_s"]
        run_rss, up_rss = (
            f"tree {harness.mib(run['peak_tree_rss'])}",
            f"tree {harness.mib(up['peak_tree_rss'])}",
        )
        rows.append(
            _row(
                "(p) kcap run, steady (first -> last routed)",
                run["routed"],
                run_rate,
                q_rate,
                run_ms,
                run_rss,
            )
        )
        rows.append(
            _row(
                "(p) kcap up, hot folder (dropped -> last routed)",
                up["images"],
                up_rate,
                q_rate,
                up_ms,
                up_rss,
            )
        )
        lines.append(
            f"host overhead (p) - (q), CPU ms/image: hot folder {up_ms - q_ms:.1f}, "
            f"kcap run net of an empty run {run_ms - q_ms:.1f}  (target <= 8)"
        )
        lines.append("(p) kcap up CPU ms/image by process: " + _roles(up["cpu_by_role"], up["images"]))
        lines.append("(p) kcap run CPU ms/image by process: " + _roles(run["cpu_by_role"], run["routed"]))
        problems += _check_captions(q["captions"], run["captions"], "kcap run")
        problems += _check_captions(q["captions"], up["captions"], "kcap up")
        for name, counts in (("kcap run", run["counts"]), ("kcap up", up["counts"])):
            if counts["errors"] or counts["output"] + counts["clip_failed"] < plan.images:
                problems.append(f"{name}: routed {counts}, expected {plan.images} captioned and no errors")
    r = results.get("r")
    if r is not None:
        lines += photo_report(r)
        problems += r["problems"]
    s = results.get("s")
    if s is not None:
        for fsync, label in (("disk", "disk fsync"), ("slow", f"fsync +{plan.slow_fsync_ms:g} ms")):
            base = s[f"{fsync}/1"]["images_per_s"]  # one message per image, in this run
            for per_message in (1, plan.route_batch):
                run = s[f"{fsync}/{per_message}"]
                rss = f"tree {harness.mib(run['peak_tree_rss'])}"
                name = f"(s) route worker alone, {label}, {per_message} result(s)/message"
                rows.append(_row(name, run["images"], run["images_per_s"], base,
                                 run["cpu_ms_per_image"], rss))  # fmt: skip
                if run["routed"] != run["images"]:
                    problems.append(f"{name}: {run['routed']} routed of {run['images']}")
    headers = ["path", "images", "images/s", "vs baseline", "CPU ms/image", "peak RSS MiB"]
    table = harness.markdown_table(headers, rows) if rows else ""
    return "\n".join([table, "", *lines]), problems


def _roles(cpu_by_role: dict[str, float], images: int) -> str:
    ranked = sorted(cpu_by_role.items(), key=lambda item: -item[1])
    return ", ".join(f"{role} {_per_image_ms(seconds, images):.1f}" for role, seconds in ranked)


def _check_captions(reference: dict[str, str], other: dict[str, str], name: str) -> list[str]:
    same, total = harness.agreement(reference, other)
    return (
        [] if same == total == len(reference) else [f"{name}: {same}/{len(reference)} captions equal (q)'s"]
    )


# -- the driver -----------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=HostPlan.images)
    parser.add_argument("--only", default="q,p,r,s", help="parts to run (q,p,r,s)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models, images and logs here")
    parser.add_argument("--one", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    plan = HostPlan(images=args.images, route_images=min(HostPlan.route_images, args.images))
    if args.one:
        harness.set_threads(THREADS)
        out = PARTS[args.one](args.workdir, plan)
        out["peak_rss_self"] = harness.peak_rss_bytes()
        out["peak_rss_children"] = harness.peak_rss_bytes(resource.RUSAGE_CHILDREN)
        args.json_out.write_text(json.dumps(out))
        return 0
    with tempfile.TemporaryDirectory(prefix="kcap-bench-host-") as temp:
        workdir = args.workdir or Path(temp)
        started = time.perf_counter()
        prepare(workdir, plan)
        print(f"bench_host: workspace ready in {time.perf_counter() - started:.0f}s ({workdir})", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for name in [n for n in args.only.split(",") if n]:
            part_started = time.perf_counter()
            results[name] = harness.run_child(
                Path(__file__).resolve(),
                ["--one", name, "--workdir", str(workdir), "--images", str(args.images)],
                workdir / f"part-{name}.log",
                env=harness.thread_env(THREADS),
            )
            print(f"bench_host: part {name} done in {time.perf_counter() - part_started:.0f}s", flush=True)
        (workdir / "host_bench.json").write_text(json.dumps(results))
        table, problems = render(results, plan)
        print(f"\nHost path benchmark: tiny models at {NEW_TOKENS} new token, batch {BATCH}, "
              f"torch threads {THREADS}; load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
        print(table)
        for problem in problems:
            print(f"MISMATCH: {problem}", file=sys.stderr)
        if args.workdir is None:
            shutil.rmtree(workdir / "p", ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
