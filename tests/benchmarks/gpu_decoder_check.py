"""On a CUDA host: kcap's static decoder writes what generate writes, eager and as CUDA graphs.

    python tests/benchmarks/gpu_decoder_check.py     # about a minute, most of it compiling

The tiny "grounded" Kosmos-2 (captions stop after varied lengths and carry grounding tags),
fp32 on the GPU, 64 images, both prompt presets: the new token ids of every image from the
decoder at 7 and 64 slots (eager) and at 64 slots compiled with mode="reduce-overhead"
must equal generate's. Prints one line per configuration; exits 1 on any difference.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from shared.core.prompts import PRESETS  # noqa: E402
from workers.captioning.captioner import Captioner  # noqa: E402
from workers.captioning.kosmos2_decoder import Kosmos2Decoder, PromptInputs  # noqa: E402
from workers.tiny.images import tiny_images  # noqa: E402
from workers.tiny.kosmos2 import build_kosmos2  # noqa: E402

EOS, PAD = 2, 1


def main() -> int:
    device = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    bad = 0
    with tempfile.TemporaryDirectory() as temp:
        path = build_kosmos2(Path(temp) / "k", preset="tiny", captions="grounded")
        captioner = Captioner(str(path), device=device, dtype=torch.float32)
    pixels = [captioner.preprocess(image) for image in tiny_images(64, seed=14)]
    for preset in ("detailed", "brief"):
        prompt = PRESETS[preset]
        ids = captioner.forward(pixels, prompt=prompt, max_new_tokens=128).tolist()
        expected = [row[: row.index(EOS) + 1] if EOS in row else row for row in ids]
        inputs = PromptInputs(**captioner._prompt_inputs(prompt))
        for slots, compiled in ((7, False), (64, False), (64, True)):
            decoder = Kosmos2Decoder(
                captioner.model, slots=slots, eos_token_ids=[EOS], pad_token_id=PAD, compile_step=compiled
            )
            started = time.perf_counter()
            rows = decoder.generate(pixels, prompt=inputs, max_new_tokens=128)
            first_s = time.perf_counter() - started
            rows = decoder.generate(pixels, prompt=inputs, max_new_tokens=128)
            differ = sum(1 for a, b in zip(rows, expected, strict=True) if a != b)
            bad += differ
            print(
                f"{device} {preset} slots={slots} compiled={compiled}: {differ} of {len(rows)} differ; "
                f"first call {first_s:.1f}s; {1000 * decoder.stats.step_s / max(decoder.stats.steps, 1):.2f} "
                f"ms/step; lengths {min(map(len, rows))}..{max(map(len, rows))}",
                flush=True,
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
