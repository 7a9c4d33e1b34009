"""A GPU that runs out of memory, for the tests of the static decoder's slot halving.

This is a mock, and the only kind the tests use: there is no GPU here to run out of memory.
"""

from __future__ import annotations

import pytest
import torch


def small_gpu_step(monkeypatch: pytest.MonkeyPatch, *, max_rows: int) -> None:
    """Make the static decoder's step raise CUDA's out-of-memory error whenever it runs more
    than max_rows rows, as a step over too many slots would on a small GPU."""
    from workers.captioning.families.kosmos2 import kosmos2_decoder

    real_step = kosmos2_decoder.Kosmos2DecodeStep

    class SmallGpuStep(real_step):  # type: ignore[misc,valid-type]
        def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, span: int) -> torch.Tensor:
            if tokens.shape[0] > max_rows:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(tokens, lengths, span)

    monkeypatch.setattr(kosmos2_decoder, "Kosmos2DecodeStep", SmallGpuStep)
