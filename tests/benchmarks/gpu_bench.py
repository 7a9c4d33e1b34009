"""GPU benchmark: full-size Kosmos-2 + CLIP ViT-L/14, the original loop vs kcap's batched path.

    python tests/benchmarks/gpu_bench.py            # on a CUDA host (make bench-gpu), ~3-6 min
    python tests/benchmarks/gpu_bench.py --dry-run  # tiny models, 2 images, CPU: checks the script
    python tests/benchmarks/gpu_bench.py --compile  # adds kcap --compile at batch 32 (+2-4 min)

Random weights with the real architectures (about 1.66 B + 0.43 B parameters), built by
tests/modelfactory.py straight on the GPU and saved in bfloat16, then loaded back through
from_pretrained as production loads them. Every image gets exactly --new-tokens new tokens
(128, the original script's maximum; the factory's models never emit EOS).

(a) batch 1, fp32, one image after another: the original script's loop (harness.BaselineLoop);
(b) kcap's path in process, bf16: Engine.prepare on a thread pool feeding a Batcher that runs
    Engine.run_batch, at each --batch-sizes; with --compile, once more at --compile-batch
    with the caption model compiled (its compile and warm-up are timed apart).

Each configuration runs one untimed warm-up (an image, or a batch), then a fixed number of
timed images. Peak GPU memory is torch.cuda.max_memory_allocated over the timed part
(weights included). The table is printed and, when $OUT is set, written to $OUT/gpu_bench.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests`, `shared`, `workers` importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tests.benchmarks import harness  # noqa: E402

NO_CUDA = (
    "gpu_bench: no CUDA device is visible (torch {torch} reports cuda.is_available() = False, "
    "CUDA build: {cuda}). Run it on a GPU host with a CUDA build of torch, or pass --dry-run "
    "to check the script on the CPU with tiny models."
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny models, 2 images, any device")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--baseline-images", type=int, default=8, help="timed images for (a)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size for (b)")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--budget-s", type=float, default=330.0, help="skip configs started after this")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--compile", action="store_true", help="also run (b) with --compile")
    parser.add_argument("--compile-batch", type=int, default=32, help="batch size of the --compile run")
    return parser.parse_args(argv)


def build_models(root: Path, *, preset: str, device: torch.device) -> tuple[Path, Path, float]:
    """Both checkpoints in bf16; initialised on the GPU when there is one (CPU init is ~60 s)."""
    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    started = time.perf_counter()
    kosmos, clip = root / "kosmos2", root / "clip"
    on_gpu = torch.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with on_gpu:
            build_kosmos2(kosmos, preset=preset, dtype=torch.bfloat16)
            build_clip(clip, preset=preset, dtype=torch.bfloat16)
    except Exception as exc:  # a factory step that will not run under a CUDA default device
        if device.type != "cuda":
            raise
        print(f"gpu_bench: building on the GPU failed ({exc!r}); building on the CPU", flush=True)
        build_kosmos2(kosmos, preset=preset, dtype=torch.bfloat16)
        build_clip(clip, preset=preset, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return kosmos, clip, time.perf_counter() - started


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _row(label: str, batch_size: int, batch_run: harness.Run, base: harness.Run) -> list[object]:
    speed = batch_run.images_per_s
    return [
        label,
        "bf16",
        batch_size,
        batch_run.images,
        f"{batch_run.wall_s:.1f}",
        f"{speed:.3f}",
        f"{speed / base.images_per_s:.1f}x",
        harness.mib(batch_run.peak_gpu_bytes),
    ]


def run(args: argparse.Namespace, workdir: Path) -> tuple[str, list[str]]:
    from shared.core.settings import Settings
    from workers.captioning.engine import Engine

    started = time.perf_counter()
    device = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    preset = "tiny" if args.dry_run else "full"
    new_tokens = min(args.new_tokens, 8) if args.dry_run else args.new_tokens
    batch_sizes = [int(v) for v in args.batch_sizes.split(",") if v]
    baseline_images = 2 if args.dry_run else args.baseline_images
    batched_images = {bs: 2 if args.dry_run else bs * args.batches for bs in batch_sizes}
    problems: list[str] = []

    kosmos, clip, build_s = build_models(workdir / "models", preset=preset, device=device)
    print(f"gpu_bench: {preset} models built in {build_s:.0f}s", flush=True)
    compile_images = 2 if args.dry_run else args.compile_batch * args.batches
    count = max(baseline_images, compile_images, *batched_images.values())
    root = workdir / "images"
    files = harness.write_images(root, count, size=(640, 480))

    # kcap's defaults (prompt, cleanup, greedy) for both paths; bf16 for kcap.
    settings = Settings(
        caption_model=str(kosmos), clip_model=str(clip), dtype="bfloat16", max_new_tokens=new_tokens
    )

    # (a) the original way: batch 1, fp32.
    loop = harness.BaselineLoop(str(kosmos), str(clip), device=device, dtype=torch.float32)
    base = loop.run(files[:baseline_images], root=root, prompt=settings.prompts[0], max_new_tokens=new_tokens)
    del loop
    _free(device)
    print(f"gpu_bench: (a) {base.images} images in {base.wall_s:.1f}s", flush=True)
    rows: list[list[object]] = [
        [
            "(a) original loop",
            "fp32",
            1,
            base.images,
            f"{base.wall_s:.1f}",
            f"{base.images_per_s:.3f}",
            "1.0x",
            harness.mib(base.peak_gpu_bytes),
        ]
    ]
    runs = [base]

    # (b) kcap: Engine + Batcher, bf16.
    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(root, files, settings)
    harness.check_fixed_length(engine, jobs[0], new_tokens=new_tokens)
    best = 0.0
    for bs in batch_sizes:
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            rows.append(["(b) kcap Engine+Batcher", "bf16", bs, "-", "-", "skipped: time budget", "-", "-"])
            continue
        batch_run = harness.kcap_batched(
            engine, jobs[: batched_images[bs]], batch_size=bs, batch_wait_s=0.05, warmup=jobs[:bs]
        )
        runs.append(batch_run)
        speed = batch_run.images_per_s
        best = max(best, speed)
        print(f"gpu_bench: (b) batch {bs}: {batch_run.images} images in {batch_run.wall_s:.1f}s", flush=True)
        rows.append(_row("(b) kcap Engine+Batcher", bs, batch_run, base))
    compile_s = None
    if args.compile and time.perf_counter() - started > args.budget_s:
        rows.append(["(b) --compile", "bf16", args.compile_batch, "-", "-", "skipped: time budget", "-", "-"])
    elif args.compile:
        del engine
        _free(device)
        bs = args.compile_batch
        load_started = time.perf_counter()
        engine = Engine.load(settings.replace(compile=True), eager_scorer=True)
        compile_s = time.perf_counter() - load_started
        batch_run = harness.kcap_batched(
            engine, jobs[:compile_images], batch_size=bs, batch_wait_s=0.05, warmup=jobs[:bs]
        )
        batch_run.name = f"kcap batch {bs} --compile"
        runs.append(batch_run)
        speed = batch_run.images_per_s
        best = max(best, speed)
        print(f"gpu_bench: (b) --compile batch {bs}: {batch_run.images} images in {batch_run.wall_s:.1f}s")
        rows.append(_row("(b) kcap Engine+Batcher, --compile", bs, batch_run, base))
    for one in runs:
        counts = harness.word_counts(one.captions)
        if counts != {new_tokens} or len(one.captions) != one.images:
            problems.append(f"{one.name}: {len(one.captions)} captions, word counts {sorted(counts)}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor()})"
    import transformers

    headers = ["path", "dtype", "batch", "images", "wall s", "images/s", "vs (a)", "peak GPU MiB"]
    lines = [
        f"## kcap GPU benchmark{' (DRY RUN: tiny models)' if args.dry_run else ''}",
        "",
        f"{name}; torch {torch.__version__}, transformers {transformers.__version__}. "
        f"Kosmos-2 + CLIP, preset {preset!r}, random weights; exactly {new_tokens} new tokens per "
        f"image; 640x480 JPEG inputs. Timed images exclude one warm-up image/batch per config.",
        "",
        harness.markdown_table(headers, rows),
        "",
        f"best (b)/(a): {best / base.images_per_s:.1f}x (target >= 10x)",
        f"models built in {build_s:.0f}s; whole run {time.perf_counter() - started:.0f}s",
    ]
    if compile_s is not None:
        lines.append(f"--compile: load, compile and warm-up took {compile_s:.0f}s (not in the timed figures)")
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kcap-gpu-bench-") as temp:
        table, problems = run(args, args.workdir or Path(temp))
    print(table)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_bench.md").write_text(table + "\n")
        print(f"gpu_bench: table written to {Path(out, 'gpu_bench.md')}")
    for problem in problems:
        print(f"SANITY: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
