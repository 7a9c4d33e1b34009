"""Memory benchmark: a worker process holding both FULL-size models, fp32 vs bf16, on the CPU.

    python tests/benchmarks/memory_bench.py [--models-dir DIR] [--new-tokens 4]

Builds full-size Kosmos-2 (~1.66 B parameters) and CLIP ViT-L/14 (~0.43 B) with random
weights once, saved in bf16 (about 4.2 GB on disk; ~1 min and several GB of RAM), in a child
process so the builder's memory is returned. Then, for each dtype, a fresh child process does
what a caption worker does: Engine.load (both models, eager), then one batch-1 caption and
score. Peak RSS (ru_maxrss) is therefore per configuration. Target: bf16 under 6 GB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests`, `shared`, `workers` importable
    sys.path.insert(0, str(REPO))

from tests.benchmarks import harness  # noqa: E402

TARGET_BYTES = 6 * 10**9
DTYPES = ("float32", "bfloat16")


def build(models: Path) -> dict[str, Any]:
    import torch

    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    started = time.perf_counter()
    build_kosmos2(models / "kosmos2", preset="full", dtype=torch.bfloat16)
    build_clip(models / "clip", preset="full", dtype=torch.bfloat16)
    return {"build_s": time.perf_counter() - started, "peak_rss": harness.peak_rss_bytes()}


def weight_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(models: Path, dtype: str, *, new_tokens: int) -> dict[str, Any]:
    """In a fresh process: the caption worker's load, then one batch-1 caption and score."""
    from shared.core.settings import Settings
    from workers.captioning.engine import Engine

    import_rss = harness.current_rss_bytes()
    settings = Settings(
        caption_model=str(models / "kosmos2"),
        clip_model=str(models / "clip"),
        dtype=dtype,
        max_new_tokens=new_tokens,
        gpus="cpu",
    )
    started = time.perf_counter()
    engine = Engine.load(settings, eager_scorer=True)
    load_s = time.perf_counter() - started
    loaded_rss = harness.current_rss_bytes()
    load_peak = harness.peak_rss_bytes()

    with tempfile.TemporaryDirectory(prefix="kcap-mem-") as temp:
        files = harness.write_images(Path(temp), 1, size=(640, 480))
        jobs = harness.jobs_from_files(Path(temp), files, settings)
    started = time.perf_counter()
    done = engine.run_batch(jobs[0].options()[0], [engine.prepare(jobs[0])])
    run_s = time.perf_counter() - started
    return {
        "dtype": dtype,
        "kosmos2_bytes": weight_bytes(engine.captioner.model),
        "clip_bytes": weight_bytes(engine.scorer().model),
        "kosmos2_params": sum(p.numel() for p in engine.captioner.model.parameters()),
        "clip_params": sum(p.numel() for p in engine.scorer().model.parameters()),
        "import_rss": import_rss,
        "loaded_rss": loaded_rss,
        "load_peak_rss": load_peak,
        "after_rss": harness.current_rss_bytes(),
        "peak_rss": harness.peak_rss_bytes(),
        "load_s": load_s,
        "run_s": run_s,
        "caption_words": len(done[0].text.split()),
    }


def _child(args: list[str], log_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = harness.run_child(Path(__file__).resolve(), args, log_path)
    return result


def run_all(workdir: Path, *, models: Path | None = None, new_tokens: int = 4) -> dict[str, Any]:
    report: dict[str, Any] = {"new_tokens": new_tokens}
    if models is None or not (models / "kosmos2" / "config.json").exists():
        models = models or workdir / "models"
        report["build"] = _child(["--build", "--models-dir", str(models)], workdir / "build.log")
        print(f"memory_bench: full-size models built in {report['build']['build_s']:.0f}s", flush=True)
    for dtype in DTYPES:
        report[dtype] = _child(
            ["--one", dtype, "--models-dir", str(models), "--new-tokens", str(new_tokens)],
            workdir / f"{dtype}.log",
        )
        print(f"memory_bench: {dtype} measured", flush=True)
    return report


def render(report: dict[str, Any]) -> str:
    rows = []
    for dtype in DTYPES:
        r = report[dtype]
        both = r["kosmos2_bytes"] + r["clip_bytes"]
        rows.append(
            [
                dtype,
                harness.mib(r["kosmos2_bytes"]),
                harness.mib(r["clip_bytes"]),
                harness.mib(both),
                harness.mib(r["import_rss"]),
                harness.mib(r["loaded_rss"]),
                harness.mib(r["after_rss"]),
                harness.mib(r["peak_rss"]),
                f"{r['peak_rss'] / 1e9:.2f}",
                "yes" if r["peak_rss"] < TARGET_BYTES else "no",
            ]
        )
    headers = [
        "dtype",
        "Kosmos-2 weights MiB",
        "CLIP weights MiB",
        "both MiB",
        "RSS after imports",
        "RSS after load",
        "RSS after batch-1 caption",
        "peak RSS MiB",
        "peak GB",
        "< 6 GB",
    ]
    fp32 = report["float32"]
    lines = [
        f"Memory benchmark (CPU): one process holding full-size Kosmos-2 "
        f"({fp32['kosmos2_params'] / 1e9:.2f} B parameters) and CLIP ViT-L/14 "
        f"({fp32['clip_params'] / 1e9:.2f} B), loaded by Engine.load from a bf16 checkpoint, "
        f"then one batch-1 caption ({report['new_tokens']} new tokens) and score",
        "",
        harness.markdown_table(headers, rows),
        "",
        "load time: " + ", ".join(f"{d} {report[d]['load_s']:.0f}s" for d in DTYPES),
        "batch-1 caption+score time: " + ", ".join(f"{d} {report[d]['run_s']:.1f}s" for d in DTYPES),
    ]
    if "build" in report:
        lines.append(
            f"build (once, bf16 on disk): {report['build']['build_s']:.0f}s, "
            f"peak RSS {harness.mib(report['build']['peak_rss'])} MiB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="reuse or build the checkpoints here")
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=DTYPES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        args.json_out.write_text(json.dumps(build(args.models_dir)))
        return 0
    if args.one:
        args.json_out.write_text(json.dumps(measure(args.models_dir, args.one, new_tokens=args.new_tokens)))
        return 0
    with tempfile.TemporaryDirectory(prefix="kcap-mem-bench-") as temp:
        report = run_all(Path(temp), models=args.models_dir, new_tokens=args.new_tokens)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
