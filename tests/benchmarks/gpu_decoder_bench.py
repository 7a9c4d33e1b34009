"""On a CUDA host: kcap's static decoder against generate, correctness then speed.

    python tests/benchmarks/gpu_decoder_bench.py [--slots 64,128,32] [--budget-s 330]

1. Correctness, fp32: the tiny "grounded" Kosmos-2 (captions stop after varied lengths and
   carry grounding tags), 64 images, both prompt presets: the decoder's new token ids at 7
   and 64 slots (eager) and 64 slots compiled (mode="reduce-overhead", CUDA graphs) must
   equal generate's.
2. Speed, bf16: the "full" Kosmos-2 (random weights, real sizes), exactly --new-tokens per
   image: generate at batch N against the decoder at N slots (compiled; at 64 also eager),
   one warm-up batch each (compile and graph capture timed apart), then one timed batch.
   Reported: images/s, ms per decode step, the KV cache size, and the ratio to generate.

Needs only torch, transformers and Pillow (as the lent GPU machines have). The table goes
to stdout and, when $OUT is set, to $OUT/gpu_decoder_bench.md. Exits 1 on a caption
difference in part 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from shared.core.prompts import PRESETS  # noqa: E402
from workers.captioning.families.kosmos2.captioner import Captioner  # noqa: E402
from workers.captioning.families.kosmos2.kosmos2_decoder import Kosmos2Decoder, PromptInputs  # noqa: E402
from workers.tiny.images import tiny_images  # noqa: E402
from workers.tiny.kosmos2 import build_kosmos2  # noqa: E402

EOS, PAD = 2, 1


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def correctness(workdir: Path, device: torch.device) -> tuple[list[str], int]:
    path = build_kosmos2(workdir / "grounded", preset="tiny", captions="grounded")
    captioner = Captioner(str(path), device=device, dtype=torch.float32)
    pixels = [captioner.preprocess(image) for image in tiny_images(64, seed=14)]
    lines, bad = [], 0
    for preset in ("detailed", "brief"):
        prompt = PRESETS[preset]
        ids = captioner.forward(pixels, prompt=prompt, max_new_tokens=128).tolist()
        expected = [row[: row.index(EOS) + 1] if EOS in row else row for row in ids]
        inputs = PromptInputs(**captioner._prompt_inputs(prompt))
        for slots, compiled in ((7, False), (64, False), (64, True)):
            decoder = Kosmos2Decoder(
                captioner.model, slots=slots, eos_token_ids=[EOS], pad_token_id=PAD, compile_step=compiled
            )
            decoder.generate(pixels, prompt=inputs, max_new_tokens=128)  # compile, capture
            rows = decoder.generate(pixels, prompt=inputs, max_new_tokens=128)
            differ = sum(1 for a, b in zip(rows, expected, strict=True) if a != b)
            bad += differ
            lines.append(
                f"- fp32 tiny grounded, {preset}, {slots} slots, {'compiled' if compiled else 'eager'}: "
                f"{differ} of {len(rows)} differ from generate (lengths {min(map(len, rows))}.."
                f"{max(map(len, rows))})"
            )
            print(lines[-1], flush=True)
    return lines, bad


def speed(
    workdir: Path, device: torch.device, slot_counts: list[int], new_tokens: int, deadline: float
) -> str:
    started = time.perf_counter()
    with torch.device(device):
        path = build_kosmos2(workdir / "full", preset="full", dtype=torch.bfloat16)
    torch.cuda.empty_cache()
    captioner = Captioner(str(path), device=device, dtype=torch.bfloat16)
    print(f"full model built and loaded in {time.perf_counter() - started:.0f}s", flush=True)
    prompt = PRESETS["detailed"]
    inputs = PromptInputs(**captioner._prompt_inputs(prompt))
    pixels = [captioner.preprocess(image) for image in tiny_images(max(slot_counts), seed=5)]
    table = [
        "| path | batch / slots | images/s | ms/step | vs generate | KV cache MiB | warm-up s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    configs = [(n, mode) for n in slot_counts for mode in ("generate", "compiled")]
    configs.insert(2, (slot_counts[0], "eager"))
    base: dict[int, float] = {}
    for n, mode in configs:
        if time.perf_counter() > deadline:
            table.append(f"| {mode} | {n} | skipped: time budget | | | | |")
            continue
        batch = pixels[:n]
        warm = time.perf_counter()
        if mode == "generate":
            captioner.forward(batch, prompt=prompt, max_new_tokens=4)
            _sync()
            warm_s = time.perf_counter() - warm
            t0 = time.perf_counter()
            captioner.forward(batch, prompt=prompt, max_new_tokens=new_tokens)
            _sync()
            wall = time.perf_counter() - t0
            base[n] = wall
            table.append(
                f"| generate | {n} | {n / wall:.1f} | {1000 * wall / new_tokens:.2f} | 1.00x | - "
                f"| {warm_s:.0f} |"
            )
        else:
            decoder = Kosmos2Decoder(
                captioner.model,
                slots=n,
                eos_token_ids=[EOS],
                pad_token_id=PAD,
                compile_step=mode == "compiled",
            )
            # The factory's model never emits EOS: every row runs new_tokens (a fair race).
            decoder.generate(batch, prompt=inputs, max_new_tokens=new_tokens)
            _sync()
            warm_s = time.perf_counter() - warm
            t0 = time.perf_counter()
            decoder.generate(batch, prompt=inputs, max_new_tokens=new_tokens)
            _sync()
            wall = time.perf_counter() - t0
            step_ms = 1000 * decoder.stats.step_s / max(decoder.stats.steps, 1)
            versus = f"{base[n] / wall:.2f}x" if n in base else "-"
            table.append(
                f"| kcap-static, {mode} | {n} | {n / wall:.1f} | {step_ms:.2f} | {versus} | "
                f"{decoder.cache_bytes / 2**20:.0f} | {warm_s:.0f} |"
            )
            del decoder
            torch.cuda.empty_cache()
        print(table[-1], flush=True)
    return "\n".join(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slots", default="64,128,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--budget-s", type=float, default=330.0)
    parser.add_argument("--skip-correctness", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_decoder_bench: no CUDA device", file=sys.stderr)
        return 2
    started = time.perf_counter()
    device = torch.device("cuda:0")
    with tempfile.TemporaryDirectory(prefix="kcap-gpu-decoder-") as temp:
        lines, bad = ([], 0) if args.skip_correctness else correctness(Path(temp), device)
        table = speed(
            Path(temp),
            device,
            [int(v) for v in args.slots.split(",") if v],
            args.new_tokens,
            started + args.budget_s,
        )
    import transformers

    text = "\n".join(
        [
            f"## kcap-static decoder on {torch.cuda.get_device_name(device)}",
            f"torch {torch.__version__}, transformers {transformers.__version__}; full-size Kosmos-2 "
            f"(random weights), bf16, {args.new_tokens} new tokens per image, detailed prompt; "
            f"whole run {time.perf_counter() - started:.0f}s",
            "",
            *lines,
            "",
            table,
        ]
    )
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_decoder_bench.md").write_text(text + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
