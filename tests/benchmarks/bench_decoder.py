"""CPU benchmark of the decode loop: transformers' generate against kcap's static decoder.

    python tests/benchmarks/bench_decoder.py [--images 256] [--slots 64] [--threads 1] [--pool-only]
    make bench                     # through tests/benchmarks/test_bench_decoder.py

One process, the same images, the same model, side by side, fp32 on the CPU:

(g)  generate, static batches of --slots images (the engine's path before the decoder);
(s)  kcap's decoder, the images cut into the same static batches (no refill between them);
(k)  kcap's decoder, all images through --slots slots, refilled as rows finish;
(s+c), (k+c)  the same with the step compiled (torch.compile, inductor on the CPU); the
     compile and warm-up are timed apart, as a worker does them at start.

First, a table of images arriving over time from a pool of threads, as Celery's pool hands
them over (bench_stream.py): the static decoder fed per batch by the Batcher against
streamed by the DecodeStream, images/s and CPU ms per image (--pool-only: that alone).

With --e2e it also runs `kcap run` (embedded Redis, the real caption and route workers,
a folder of JPEGs to routed files) on the deep grounded model twice, at the default batch
size and slots: --decoder generate, and the default decoder (kcap's, streamed across jobs).
Figures: start to exit, and the steady state (first to last image routed).

Workloads: the "deep" tiny Kosmos-2 (16 layers of width 64: bound by per-step overhead, as
a real decoder is bound by kernel launches on a GPU) in its "grounded" caption mode, whose
captions stop after varied lengths; and the "small" preset (compute, not overhead,
dominates), whose captions run to --new-tokens. Reported: images/s, ms per decode step, ms
per generated token, and ratios against (g) measured in the same process. The run fails
when any caption or entity list differs from generate's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests`, `shared`, `workers` importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from shared.core.prompts import PRESETS  # noqa: E402
from tests.benchmarks import harness  # noqa: E402
from tests.benchmarks.bench_stream import run_pool_workload  # noqa: E402
from workers.captioning.families.kosmos2.captioner import Captioner  # noqa: E402
from workers.captioning.families.kosmos2.kosmos2_decoder import Kosmos2Decoder, PromptInputs, pad_rows  # noqa: E402
from workers.tiny.images import tiny_images  # noqa: E402
from workers.tiny.kosmos2 import build_kosmos2  # noqa: E402

EOS, PAD = 2, 1


@dataclass(frozen=True)
class Row:
    workload: str
    path: str
    images: int
    wall_s: float
    steps: int  # decode steps run (generate: the longest row of each batch)
    tokens: int  # new tokens kept (end-of-text included; padding not)
    mismatches: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.wall_s / max(self.steps, 1)

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.wall_s / max(self.tokens, 1)


def _rows_of(ids: torch.Tensor) -> list[list[int]]:
    return [row[: row.index(EOS) + 1] if EOS in row else row for row in ids.tolist()]


def run_workload(
    name: str, model_dir: Path, *, images: int, slots: int, new_tokens: int, prompt: str, compile: bool
) -> list[Row]:
    captioner = Captioner(str(model_dir), device=torch.device("cpu"), dtype=torch.float32)
    pixels = [captioner.preprocess(image) for image in tiny_images(images, seed=11)]
    batches = [pixels[i : i + slots] for i in range(0, len(pixels), slots)]
    inputs = PromptInputs(**captioner._prompt_inputs(prompt))
    # Warm-up (allocator, first calls), not timed.
    captioner.forward(batches[0][:2], prompt=prompt, max_new_tokens=4)

    started = time.perf_counter()
    reference: list[list[int]] = []
    generate_steps = 0
    for batch in batches:
        rows = _rows_of(captioner.forward(batch, prompt=prompt, max_new_tokens=new_tokens))
        generate_steps += max(len(r) for r in rows)
        reference += rows
    generate_s = time.perf_counter() - started
    expected = _captions(captioner, reference, new_tokens)

    tokens = sum(len(r) for r in reference)
    rows = [Row(name, f"generate, batches of {slots}", images, generate_s, generate_steps, tokens, 0)]
    for compiled in (False, True) if compile else (False,):
        decoder = Kosmos2Decoder(
            captioner.model, slots=slots, eos_token_ids=[EOS], pad_token_id=PAD, compile_step=compiled
        )
        started = time.perf_counter()
        # Compile and warm-up: a whole batch at full length, so every attention span the
        # timed runs meet has been compiled for (as a worker's start-up does).
        decoder.generate(batches[0], prompt=inputs, max_new_tokens=new_tokens)
        warm_s = time.perf_counter() - started
        suffix = f", compiled ({warm_s:.0f}s at start)" if compiled else ""

        started = time.perf_counter()
        static_rows: list[list[int]] = []
        static_steps = 0
        for batch in batches:
            static_rows += decoder.generate(batch, prompt=inputs, max_new_tokens=new_tokens)
            static_steps += decoder.stats.steps + 1
        static_s = time.perf_counter() - started

        started = time.perf_counter()
        continuous = decoder.generate(pixels, prompt=inputs, max_new_tokens=new_tokens)
        continuous_s = time.perf_counter() - started
        continuous_steps = decoder.stats.steps + decoder.stats.prefills
        rows += [
            Row(
                name,
                f"kcap, batches of {slots}{suffix}",
                images,
                static_s,
                static_steps,
                sum(len(r) for r in static_rows),
                _mismatches(expected, _captions(captioner, static_rows, new_tokens)),
            ),
            Row(
                name,
                f"kcap, {slots} slots refilled{suffix}",
                images,
                continuous_s,
                continuous_steps,
                sum(len(r) for r in continuous),
                _mismatches(expected, _captions(captioner, continuous, new_tokens)),
            ),
        ]
    return rows


def _captions(captioner: Captioner, rows: list[list[int]], new_tokens: int) -> list[Any]:
    parsed = captioner.postprocess(pad_rows(rows, pad_token_id=PAD), max_new_tokens=new_tokens)
    return [(c.text, c.entities, c.truncated) for c in parsed]


def _mismatches(expected: list[Any], got: list[Any]) -> int:
    return sum(1 for a, b in zip(expected, got, strict=True) if a != b)


def render(rows: list[Row]) -> str:
    table = []
    baseline: dict[str, Row] = {}
    for row in rows:
        base = baseline.setdefault(row.workload, row)
        table.append(
            [
                row.workload,
                row.path,
                f"{row.images_per_s:.1f}",
                f"{row.images_per_s / base.images_per_s:.2f}x",
                row.steps,
                f"{row.ms_per_step:.2f}",
                f"{row.ms_per_token:.3f}",
                f"{base.ms_per_token / row.ms_per_token:.2f}x",
                row.mismatches,
            ]
        )
    headers = [
        "model",
        "path",
        "images/s",
        "vs generate",
        "steps",
        "ms/step",
        "ms/token",
        "token speed-up",
        "caption mismatches",
    ]
    return harness.markdown_table(headers, table)


def run_all(
    workdir: Path, *, images: int, slots: int, new_tokens: int, threads: int, compile: bool = True
) -> list[Row]:
    harness.set_threads(threads)
    rows: list[Row] = []
    for preset, captions, prompt in (
        ("deep", "grounded", PRESETS["detailed"]),
        ("small", "endless", PRESETS["detailed"]),
    ):
        model_dir = build_kosmos2(workdir / f"kosmos2-{preset}", preset=preset, captions=captions)
        count = images if preset == "deep" else max(slots, images // 4)
        rows += run_workload(
            f"{preset} ({captions})",
            model_dir,
            images=count,
            slots=slots,
            new_tokens=new_tokens,
            prompt=prompt,
            compile=compile,
        )
    return rows


def run_e2e(workdir: Path, *, images: int, new_tokens: int, threads: int) -> str:
    """`kcap run` with its default batch size and slots, --decoder generate against the
    default (kcap's decoder, streamed), on the deep grounded model; a markdown table."""
    from shared.core.settings import Settings
    from tests.benchmarks import cpu_e2e
    from tests.benchmarks.cpu_plan import Plan
    from workers.tiny.clip import build_clip

    kosmos = build_kosmos2(workdir / "e2e-kosmos2", preset="deep", captions="grounded")
    clip = build_clip(workdir / "e2e-clip", preset="tiny")
    files = harness.write_images(workdir / "e2e-images", images, size=(64, 48))
    real_settings = cpu_e2e.bench_settings
    defaults = Settings()
    table = [
        "| kcap run | batch | slots | routed | start to exit s | first to last routed s | images/s steady |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    captions: list[dict[str, str]] = []
    for decoder in ("generate", "auto"):

        def settings_for(k: Path, c: Path, plan: Plan, _d: str = decoder, **more: Any) -> Any:
            return real_settings(k, c, plan, decoder=_d, **more)

        cpu_e2e.bench_settings = settings_for  # type: ignore[assignment]
        try:
            plan = Plan(
                images=images, new_tokens=new_tokens, e2e_batch_size=defaults.batch_size, threads=threads
            )
            run = cpu_e2e.kcap_run_once(workdir / f"e2e-{decoder}", kosmos, clip, files, plan)
        finally:
            cpu_e2e.bench_settings = real_settings
        steady = run["phases"].get("first_to_last_routed_s", 0.0)
        slots = f"{defaults.decoder_slots}, streamed" if decoder == "auto" else "-"
        table.append(
            f"| --decoder {decoder} | {defaults.batch_size} | {slots} | {run['routed']} | "
            f"{run['wall_s']:.1f} | {steady:.1f} | {run['routed'] / steady if steady else 0:.1f} |"
        )
        captions.append(run["captions"])
    same = sum(1 for key, text in captions[0].items() if captions[1].get(key) == text)
    table.append("")
    table.append(f"captions equal between the two runs: {same} of {len(captions[0])}")
    return "\n".join(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    parser.add_argument("--e2e", action="store_true", help="also time `kcap run` both ways")
    parser.add_argument("--e2e-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--pool-only",
        action="store_true",
        help="only images arriving from a pool: per batch against streamed",
    )
    args = parser.parse_args(argv)
    if args.e2e or args.e2e_only:
        with tempfile.TemporaryDirectory(prefix="kcap-bench-decoder-e2e-") as temp:
            print(
                run_e2e(Path(temp), images=args.images, new_tokens=args.new_tokens, threads=args.threads),
                flush=True,
            )
        if args.e2e_only:
            return 0
    with tempfile.TemporaryDirectory(prefix="kcap-bench-decoder-pool-") as temp:
        table, pool_bad = run_pool_workload(
            Path(temp), images=args.images, new_tokens=args.new_tokens, threads=args.threads
        )
    print(table, flush=True)
    if pool_bad:
        print(f"FAIL: {pool_bad} streamed or batched captions differ from generate's", file=sys.stderr)
    if args.pool_only:
        return 1 if pool_bad else 0
    with tempfile.TemporaryDirectory(prefix="kcap-bench-decoder-") as temp:
        rows = run_all(
            Path(temp),
            images=args.images,
            slots=args.slots,
            new_tokens=args.new_tokens,
            threads=args.threads,
            compile=not args.no_compile,
        )
    print(render(rows))
    bad = sum(row.mismatches for row in rows) + pool_bad
    if bad:
        print(f"FAIL: {bad} captions differ from generate's", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
