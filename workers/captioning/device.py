"""Which device and dtype this worker process uses. Only called after any fork."""

from __future__ import annotations

import torch

from shared.core.errors import ConfigError

_NAMED = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device() -> torch.device:
    """cuda:0 when a GPU is visible (the supervisor pins one through CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it, else fp16 on a GPU, fp32 on the CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _NAMED[name]
    except KeyError:
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, not {name!r}") from None


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, under any of the names torch has used for it."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
