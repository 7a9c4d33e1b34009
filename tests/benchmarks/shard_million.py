"""bench_shards --million: many tiny images in 100 shards through `kcap run --input-shards
--shard-output captions`, the process tree's RSS at 10 %, 50 % and 100 % of the samples."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import harness
from tests.benchmarks.shard_runs import ShardPlan, bench_settings, kcap_run, start_redis
from tests.integration.shard_helpers import shard_args


def million_folder(workdir: Path, plan: ShardPlan) -> Path:
    return workdir / f"million-{plan.images}"


def million_shards(folder: Path, plan: ShardPlan) -> None:
    """plan.images tiny PNGs in 100 shards: 1,000 distinct 16x16 images under distinct keys
    (the same bytes again cost the model the same; what grows is the count)."""
    from tests.integration.helpers import image_bytes
    from workers.tiny.images import tiny_images

    folder.mkdir(parents=True, exist_ok=True)
    pool = [image_bytes(image) for image in tiny_images(1000, seed=3, size=(16, 16))]
    per = -(-plan.images // 100)
    for n in range(100):
        path = folder / f"{n:05d}.tar"
        if path.exists():
            continue
        temp = path.with_suffix(".part")
        with tarfile.open(temp, "w") as tar:
            for i in range(n * per, min(plan.images, (n + 1) * per)):
                data = pool[i % len(pool)]
                info = tarfile.TarInfo(f"m{i:08d}.png")
                info.size = len(data)
                tar.addfile(info, _Bytes(data))
        temp.rename(path)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.at + size
        chunk, self.at = self.data[self.at : end], min(len(self.data), end)
        return chunk


def part_m(workdir: Path, plan: ShardPlan) -> dict[str, Any]:
    """The flat-memory run: the tree's RSS at 10 %, 50 % and 100 % of the samples."""
    from shared.core.broker import redis_client
    from shared.core.shard_board import ShardBoard

    base = workdir / "m"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    server = start_redis(base)
    board_client = redis_client(server.admin_url, decode_responses=True)
    settings = bench_settings(workdir, broker_url=server.url, state_dir=base / "state")
    board = ShardBoard(board_client, settings.keys)

    def watch(process: subprocess.Popen[bytes], sampler: Any) -> dict[str, Any]:
        marks: dict[str, Any] = {}
        for fraction in (0.1, 0.5, 1.0):
            while process.poll() is None:
                try:
                    done = sum(e.samples for e in board.entries().values())
                except Exception:
                    done = 0
                if done >= fraction * plan.images:
                    marks[f"{fraction:.0%}"] = {
                        "samples": done,
                        "tree_rss": harness.tree_rss_bytes(process.pid),
                        "by_role": harness.rss_by_role(process.pid),
                        "redis_used": int(board_client.info("memory")["used_memory"]),
                        "s": time.perf_counter(),
                    }
                    break
                time.sleep(0.1)
        return {"marks": marks}

    try:
        started = time.perf_counter()
        run = kcap_run(
            base,
            settings,
            shard_args(str(million_folder(workdir, plan)), base, "--shard-output", "captions"),
            watch=watch,
        )
        ended = time.perf_counter()
        entries = board.entries()
    finally:
        board_client.close()
        server.close()
    samples = sum(e.samples for e in entries.values())
    if "100%" not in run["marks"]:  # the run ended between two looks: its peak stands in
        run["marks"]["100%"] = {"samples": samples, "tree_rss": run["peak_tree_rss"], "s": ended}
    for mark in run["marks"].values():
        mark["s"] -= started
    return {**run, "samples": samples, "errors": sum(e.counts.get("errors", 0) for e in entries.values())}


def render_million(m: dict[str, Any], plan: ShardPlan) -> tuple[list[str], list[str]]:
    lines = [
        f"flat-memory run: {m['samples']} samples in 100 shards through kcap run --input-shards "
        f"--shard-output captions in {m['wall_s']:.0f}s ({m['samples'] / m['wall_s']:.0f} samples/s)"
    ]
    for name, mark in m["marks"].items():
        roles = ", ".join(
            f"{role} {harness.mib(rss)}" for role, rss in sorted(mark.get("by_role", {}).items())
        )
        redis = f"; Redis used_memory {harness.mib(mark['redis_used'])} MiB" if "redis_used" in mark else ""
        lines.append(
            f"  at {name}: {mark['samples']} samples, {mark['s']:.0f}s, "
            f"tree RSS {harness.mib(mark['tree_rss'])} MiB ({roles}){redis}"
        )
    lines.append(f"  peak tree RSS {harness.mib(m['peak_tree_rss'])} MiB")
    problems = (
        []
        if m["samples"] == plan.images and not m["errors"]
        else [f"million: {m['samples']} samples ({m['errors']} errors), expected {plan.images}"]
    )
    growth = second_half_growth(m["marks"])
    if growth is not None:
        lines.append(
            f"  second half: {growth:+.1f} bytes of tree RSS per sample (flat: under {KEPT_PER_SAMPLE_BYTES})"
        )
        if growth >= KEPT_PER_SAMPLE_BYTES:
            problems.append(f"million: the tree grew {growth:.0f} bytes per sample over its second half")
    else:
        lines.append("  second half: not measured (the run ended before its reading at 100 %)")
    return lines, problems


# Anything a run kept per sample would cost at least a small Python object (sys.getsizeof("")
# is 49 bytes): over the second half of the run (models loaded, pools and buffers at their
# size) the tree must grow by less than that per sample.
KEPT_PER_SAMPLE_BYTES = 49


def second_half_growth(marks: dict[str, Any]) -> float | None:
    """Tree RSS bytes per sample from the 50 % mark to the 100 % mark (None without both)."""
    half, whole = marks.get("50%"), marks.get("100%")
    if half is None or whole is None or "by_role" not in whole or whole["samples"] <= half["samples"]:
        return None
    return float(whole["tree_rss"] - half["tree_rss"]) / (whole["samples"] - half["samples"])
