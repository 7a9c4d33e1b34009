"""Dataset mode against the hot folder, around a near-null model (issue 20).

The tiny models at 1 new token, batch 64, torch on one thread: what a GPU looks like from the
host. On the same N small images (default 20,000, in 20 WebDataset shards), each part in its
own child process:

- (q) in process: Engine + Batcher on a thread pool (bench_host's (q)): the baseline rate;
- (h) the hot folder: `kcap run --input-dir` over the N files;
- (s) dataset mode: `kcap run --input-shards` over the N images in shards.

(h) and (s) use a redis-server of the benchmark's own (not kcap's embedded one), so that
Redis's own `INFO stats` can be read before and after: total_net_input_bytes per image is
what the run sent through Redis. It prints images/s end to end (first to last image filed,
and whole runs with start-up), storage-side CPU ms per image (the `kcap run` process and the
route worker: what a storage host pays; in dataset mode the GPU workers read and write the
store themselves) and Redis bytes per image, each with its ratio in this run, and dataset
mode's rate against (q). It exits 1 when a path files other counts or other captions than (q).

`--million`: a flat-memory run instead: 100 shards of tiny images (1,000,000 by default,
--images to change) through `kcap run --input-shards --shard-output captions`, printing the
process tree's RSS at 10 %, 50 % and 100 % of the samples.

    python tests/benchmarks/bench_shards.py [--images 20000] [--shards 20] [--million] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import harness
from tests.benchmarks.host_inputs import small_pngs
from tests.benchmarks.shard_million import million_folder, million_shards, part_m, render_million
from tests.benchmarks.shard_runs import (
    BATCH,
    NEW_TOKENS,
    THREADS,
    ShardPlan,
    bench_settings,
    kcap_run,
    models,
    net_bytes,
    start_redis,
)
from tests.integration.shard_helpers import shard_args

MILLION = 1_000_000


def prepare(workdir: Path, plan: ShardPlan, *, million: bool) -> None:
    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    paths = models(workdir)
    if not (paths["kosmos"] / "config.json").exists():
        build_kosmos2(paths["kosmos"], preset="tiny")
    if not (paths["clip"] / "config.json").exists():
        build_clip(paths["clip"], preset="tiny")
    if million:
        million_shards(million_folder(workdir, plan), plan)
    else:
        files = small_pngs(workdir / "small", plan.images)
        tar_shards(shard_folder(workdir, plan), files, plan.shards)


def shard_folder(workdir: Path, plan: ShardPlan) -> Path:
    """The shards of one size, so a kept workdir never reuses another run's."""
    return workdir / f"shards-{plan.images}-{plan.shards}"


def tar_shards(folder: Path, files: list[Path], count: int) -> list[Path]:
    """The files in `count` WebDataset shards (webdataset's own writer), keys = file stems."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(files) // count)
    shards = []
    for n in range(count):
        path = folder / f"{n:05d}.tar"
        shards.append(path)
        if path.exists():
            continue
        with wds.TarWriter(str(path)) as sink:
            for file in files[n * per : (n + 1) * per]:
                sink.write({"__key__": file.stem, "png": file.read_bytes()})
    return shards


# -- the parts ------------------------------------------------------------------------------


def part_q(workdir: Path, plan: ShardPlan) -> dict[str, Any]:
    from workers.captioning.engine import Engine

    settings = bench_settings(workdir)
    files = small_pngs(workdir / "small", plan.images)
    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(workdir / "small", files, settings)
    run = asdict(harness.kcap_batched(engine, jobs, batch_size=BATCH, warmup=jobs[:BATCH]))
    run["captions"] = {Path(k).stem: v for k, v in run["captions"].items()}
    return run


def part_h(workdir: Path, plan: ShardPlan) -> dict[str, Any]:
    from shared.core.broker import redis_client
    from tests.benchmarks.cpu_e2e import _routed

    base = workdir / "h"
    shutil.rmtree(base, ignore_errors=True)
    (base / "inbox").mkdir(parents=True)
    for path in small_pngs(workdir / "small", plan.images):
        shutil.copy2(path, base / "inbox" / path.name)
    server = start_redis(base)
    admin = redis_client(server.admin_url)
    try:
        settings = bench_settings(
            workdir,
            broker_url=server.url,
            input_dir=base / "inbox",
            output_dir=base / "output",
            clip_failed_dir=base / "clip_failed",
            errors_dir=base / "errors",
            state_dir=base / "state",
        )
        before = net_bytes(admin)
        run = kcap_run(base, settings, [])
        after = net_bytes(admin)
    finally:
        admin.close()
        server.close()
    found = _routed(settings)
    times = list(found.routed_at.values())
    return {
        **run,
        "counts": found.counts,
        "captions": {Path(k).stem: v for k, v in found.captions.items()},
        "first_last_s": max(times) - min(times) if times else 0.0,
        "redis_in": after[0] - before[0],
        "redis_out": after[1] - before[1],
    }


def _shard_outputs(base: Path) -> tuple[dict[str, int], dict[str, str], list[float]]:
    """Counts by outcome, captions by key and filing times, from the output tars' records."""
    counts = {"output": 0, "clip_failed": 0, "errors": 0}
    captions: dict[str, str] = {}
    times: list[float] = []
    for outcome in ("output", "clip_failed"):
        for path in sorted((base / outcome).glob("*.tar")):
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.name.endswith(".json"):
                        continue
                    handle = tar.extractfile(member)
                    assert handle is not None
                    record = json.loads(handle.read())
                    key = str(record["key"])
                    if key in captions:
                        raise RuntimeError(f"{key} filed twice")
                    captions[key] = str(record["text"])
                    times.append(float(record["routed_at"]))
                    counts[outcome] += 1
    for marker in (base / "captions" / "_done").glob("*.json"):
        counts["errors"] += int(json.loads(marker.read_text())["counts"].get("errors", 0))
    return counts, captions, times


def part_s(workdir: Path, plan: ShardPlan) -> dict[str, Any]:
    from shared.core.broker import redis_client

    base = workdir / "s"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    server = start_redis(base)
    admin = redis_client(server.admin_url)
    try:
        settings = bench_settings(workdir, broker_url=server.url, state_dir=base / "state")
        before = net_bytes(admin)
        run = kcap_run(base, settings, shard_args(str(shard_folder(workdir, plan)), base))
        after = net_bytes(admin)
    finally:
        admin.close()
        server.close()
    counts, captions, times = _shard_outputs(base)
    return {
        **run,
        "counts": counts,
        "captions": captions,
        "first_last_s": max(times) - min(times) if times else 0.0,
        "redis_in": after[0] - before[0],
        "redis_out": after[1] - before[1],
    }


PARTS = {"q": part_q, "h": part_h, "s": part_s, "m": part_m}


# -- the report ------------------------------------------------------------------------------


def _storage_cpu_s(run: dict[str, Any]) -> float:
    """What the storage host pays: the `kcap run` process (producer or planner) and the route
    worker; the caption workers stand for GPU hosts."""
    roles = run["cpu_by_role"]
    return float(roles.get("run", 0.0) + roles.get("router", 0.0))


def render(results: dict[str, Any], plan: ShardPlan) -> tuple[list[str], list[str]]:
    q, h, s = results["q"], results["h"], results["s"]
    n = plan.images
    q_rate = q["images"] / q["wall_s"]
    rows: list[list[object]] = []
    figures: dict[str, dict[str, float]] = {}
    for label, run in (
        ("(h) hot folder, kcap run --input-dir", h),
        ("(s) shards, kcap run --input-shards", s),
    ):
        filed = run["counts"]["output"] + run["counts"]["clip_failed"]
        steady = (filed - 1) / run["first_last_s"] if run["first_last_s"] > 0 else 0.0
        figures[label] = {
            "steady": steady,
            "whole": filed / run["wall_s"],
            "storage_ms": 1000 * _storage_cpu_s(run) / max(1, filed),
            "redis_in": run["redis_in"] / max(1, filed),
            "redis_out": run["redis_out"] / max(1, filed),
        }
        f = figures[label]
        rows.append(
            [
                label,
                filed,
                f"{f['steady']:.1f}",
                f"{f['whole']:.1f}",
                f"{f['storage_ms']:.2f}",
                f"{f['redis_in']:.0f}",
                f"{f['redis_out']:.0f}",
                harness.mib(run["peak_tree_rss"]),
            ]
        )
    # The baseline as a row of its own: (q) has one rate (no start-up, nothing filed through
    # a store or Redis), so it stands in both images/s columns and the other cells are "-".
    rows.append([f"(q) in process, batch {BATCH}", q["images"], f"{q_rate:.1f}", f"{q_rate:.1f}"] + ["-"] * 4)
    hf, sf = figures.values()
    headers = [
        "path",
        "images",
        "images/s (first -> last filed)",
        "images/s (whole run)",
        "storage-side CPU ms/image",
        "Redis in B/image",
        "Redis out B/image",
        "peak tree RSS MiB",
    ]
    lines = [
        harness.markdown_table(headers, rows),
        "",
        f"shards / hot folder: images/s {sf['steady'] / hf['steady']:.2f}x (first -> last), "
        f"{sf['whole'] / hf['whole']:.2f}x (whole run); storage-side CPU/image "
        f"{sf['storage_ms'] / hf['storage_ms']:.3f}x (target <= 0.1); Redis in bytes/image "
        f"{sf['redis_in'] / hf['redis_in']:.4f}x ({sf['redis_in']:.0f} B, target <= 1024)",
        f"shards / in process (q): {sf['steady'] / q_rate:.2f}x (target >= 0.8)",
    ]
    problems = []
    for label, run in (("hot folder", h), ("shards", s)):
        counts = run["counts"]
        if counts["errors"] or counts["output"] + counts["clip_failed"] != n:
            problems.append(f"{label}: filed {counts}, expected {n} captioned and no errors")
        same, total = harness.agreement(q["captions"], run["captions"])
        if not same == total == len(q["captions"]):
            problems.append(f"{label}: {same}/{len(q['captions'])} captions equal (q)'s")
    return lines, problems


# -- the driver ------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--images", type=int, default=None, help="images (default 20000; 1000000 with --million)"
    )
    parser.add_argument("--shards", type=int, default=ShardPlan.shards)
    parser.add_argument("--million", action="store_true", help="the flat-memory run instead")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models, images and logs here")
    parser.add_argument("--one", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    images = args.images or (MILLION if args.million else ShardPlan.images)
    plan = ShardPlan(images=images, shards=args.shards)
    if args.one:
        harness.set_threads(THREADS)
        out = PARTS[args.one](args.workdir, plan)
        args.json_out.write_text(json.dumps(out))
        return 0
    with tempfile.TemporaryDirectory(prefix="kcap-bench-shards-") as temp:
        workdir = args.workdir or Path(temp)
        started = time.perf_counter()
        prepare(workdir, plan, million=args.million)
        print(
            f"bench_shards: workspace ready in {time.perf_counter() - started:.0f}s ({workdir})", flush=True
        )
        results: dict[str, Any] = {}
        for name in ("m",) if args.million else ("q", "h", "s"):
            part_started = time.perf_counter()
            results[name] = harness.run_child(
                Path(__file__).resolve(),
                [
                    "--one",
                    name,
                    "--workdir",
                    str(workdir),
                    "--images",
                    str(images),
                    "--shards",
                    str(args.shards),
                ],
                workdir / f"part-{name}.log",
                env=harness.thread_env(THREADS),
            )
            print(f"bench_shards: part {name} done in {time.perf_counter() - part_started:.0f}s", flush=True)
        (workdir / "shard_bench.json").write_text(json.dumps(results))
        if args.million:
            lines, problems = render_million(results["m"], plan)
        else:
            lines, problems = render(results, plan)
        print(
            f"\nDataset mode benchmark: {images} images, tiny models at {NEW_TOKENS} new token, "
            f"batch {BATCH} (decoder slots {BATCH}), torch threads {THREADS}; "
            f"load average {os.getloadavg()[0]:.1f}\n"
        )
        print("\n".join(lines))
        for problem in problems:
            print(f"MISMATCH: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
