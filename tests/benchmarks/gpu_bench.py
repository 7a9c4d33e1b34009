"""GPU benchmark: full-size Kosmos-2 + CLIP ViT-L/14, the original loop vs kcap's batched path.

    python tests/benchmarks/gpu_bench.py            # on a CUDA host (make bench-gpu), ~3-6 min
    python tests/benchmarks/gpu_bench.py --dry-run  # tiny models, 2 images, CPU: checks the script
    python tests/benchmarks/gpu_bench.py --compile  # adds kcap --compile at batch 32 (+2-4 min)
    python tests/benchmarks/gpu_bench.py --no-decoder  # leaves out the (c) rows

Random weights with the real architectures (about 1.66 B + 0.43 B parameters), built by
tests/modelfactory.py straight on the GPU and saved in bfloat16, then loaded back through
from_pretrained as production loads them. Every image gets exactly --new-tokens new tokens
(128, the original script's maximum; the factory's models never emit EOS).

(a) batch 1, fp32, one image after another: the original script's loop (harness.BaselineLoop);
(b) kcap's path in process, bf16: Engine.prepare on a thread pool feeding a Batcher that runs
    Engine.run_batch, at each --batch-sizes, captioning with transformers' generate
    (--decoder generate); with --compile, once more at --compile-batch with the caption
    model compiled (its compile and warm-up are timed apart);
(c) the same path with kcap's static-cache decoder (--decoder auto, the default), its step
    compiled as CUDA graphs, at each --decoder-slots (batch size = slots); its compile and
    warm-up are timed apart, and the KV cache size and the decoder's own ms per step are
    printed. Once more at 64 slots with the step eager. On --dry-run, eager only.

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
    parser.add_argument("--decoder-slots", default="32,64,128", help="slot counts of the (c) rows")
    parser.add_argument("--no-decoder", action="store_true", help="leave out the (c) rows")
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


def _decoder_rows(
    settings: object,
    jobs: list,  # type: ignore[type-arg]
    slot_counts: list[int],
    images: dict[int, int],
    base: harness.Run,
    generate_speed: dict[int, float],
    *,
    compiled: bool,
    deadline_s: float,
) -> tuple[list[list[object]], list[harness.Run], list[str]]:
    """(c): kcap's static decoder at each slot count (compiled on CUDA), then eager at 64."""
    from workers.captioning.engine import Engine

    engine = Engine.load(settings, eager_scorer=True)  # type: ignore[arg-type]
    captioner = engine.captioner
    rows: list[list[object]] = []
    runs: list[harness.Run] = []
    notes: list[str] = []
    configs = [(n, compiled) for n in slot_counts]
    if compiled and 64 in slot_counts:
        configs.append((64, False))
    for slots, compile_step in configs:
        label = f"(c) kcap-static decoder, {'compiled' if compile_step else 'eager'}"
        if time.perf_counter() > deadline_s:
            rows.append([label, "bf16", slots, "-", "-", "skipped: time budget", "-", "-"])
            continue
        # A fresh decoder (and cache) per configuration.
        captioner._static = None
        captioner.decoder_slots = slots
        captioner.compile_decoder = compile_step
        warm_started = time.perf_counter()
        batch_run = harness.kcap_batched(
            engine, jobs[: images[slots]], batch_size=slots, batch_wait_s=0.05, warmup=jobs[:slots]
        )
        warm_s = time.perf_counter() - warm_started - batch_run.wall_s
        batch_run.name = f"{label} {slots}"
        runs.append(batch_run)
        decoder = captioner.static_decoder
        stats = decoder.stats
        step_ms = 1000 * stats.step_s / max(stats.steps, 1)
        print(
            f"gpu_bench: {label} {slots} slots: {batch_run.images} images in {batch_run.wall_s:.1f}s",
            flush=True,
        )
        rows.append(_row(label, slots, batch_run, base))
        versus = generate_speed.get(slots)
        notes.append(
            f"{label}, {slots} slots: "
            + (f"{batch_run.images_per_s / versus:.2f}x (b) at batch {slots}, " if versus else "")
            + f"KV cache {decoder.cache_bytes / 2**20:.0f} MiB, "
            f"{step_ms:.2f} ms per decode step (last batch), warm-up and compile {warm_s:.0f}s"
        )
    del engine
    return rows, runs, notes


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
    decoder_slots = [] if args.no_decoder else [int(v) for v in args.decoder_slots.split(",") if v]
    decoder_images = {n: 2 if args.dry_run else n * args.batches for n in decoder_slots}
    count = max(baseline_images, compile_images, *batched_images.values(), *decoder_images.values())
    root = workdir / "images"
    files = harness.write_images(root, count, size=(640, 480))

    # kcap's defaults (prompt, cleanup, greedy) for both paths; bf16 for kcap.
    settings = Settings(
        caption_model=str(kosmos),
        clip_model=str(clip),
        dtype="bfloat16",
        max_new_tokens=new_tokens,
        decoder="generate",
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
    generate_speed: dict[int, float] = {}
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
        rows.append(_row("(b) kcap Engine+Batcher, generate", bs, batch_run, base))
        generate_speed[bs] = speed
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
    decoder_notes: list[str] = []
    if decoder_slots:
        del engine
        _free(device)
        decoder_rows, decoder_runs, decoder_notes = _decoder_rows(
            settings.replace(decoder="auto"),
            jobs,
            decoder_slots,
            decoder_images,
            base,
            generate_speed,
            compiled=device.type == "cuda",
            deadline_s=started + args.budget_s,
        )
        rows += decoder_rows
        runs += decoder_runs
        best = max([best, *(r.images_per_s for r in decoder_runs)])
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
    lines += decoder_notes
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
