"""`make bench`: memory of a worker holding both full-size models, fp32 vs bf16 (memory_bench.py).

Builds ~4 GB of checkpoints and needs ~10 GB of RAM for the fp32 child; the figures are
printed, and only the weight accounting is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import memory_bench


@pytest.mark.benchmark
@pytest.mark.timeout(1800)
def test_full_models_fp32_vs_bf16(tmp_path: Path) -> None:
    report = memory_bench.run_all(tmp_path)
    print()
    print(memory_bench.render(report))
    fp32, bf16 = report["float32"], report["bfloat16"]
    # Kosmos-2: 1.66 B plus the 0.13 B output head that the factory unties.
    assert 1.6e9 < fp32["kosmos2_params"] < 1.9e9
    assert 0.4e9 < fp32["clip_params"] < 0.45e9
    for name in ("kosmos2_bytes", "clip_bytes"):
        assert bf16[name] * 2 == pytest.approx(fp32[name], rel=0.01)
    assert fp32["caption_words"] == bf16["caption_words"] == report["new_tokens"]
