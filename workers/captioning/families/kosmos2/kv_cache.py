"""A preallocated key/value cache with one row per decoding slot.

Invariant: the cache's tensors are allocated once, at a fixed shape
(slots, heads, max_len, head_dim) per layer, and never grow or move. That is what lets one
decode step keep fixed shapes (and, on CUDA, be captured as a graph that replays on the
same addresses). A slot's entries past its own length are stale and must be masked by the
reader; nothing here clears them.
"""

from __future__ import annotations

import torch
from torch import nn


class StaticKVCache(nn.Module):
    """Keys and values of every layer, as module buffers so torch.compile sees fixed addresses."""

    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.layers = layers
        self.slots = slots
        self.max_len = max_len
        shape = (slots, heads, max_len, head_dim)
        for i in range(layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def keys(self, layer: int) -> torch.Tensor:
        key: torch.Tensor = getattr(self, f"k{layer}")
        return key

    def values(self, layer: int) -> torch.Tensor:
        value: torch.Tensor = getattr(self, f"v{layer}")
        return value

    def write_prefix(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put a prefill's keys/values (n, heads, length, head_dim) at the start of `slots`."""
        length = keys.shape[2]
        self.keys(layer)[slots, :, :length] = keys.to(self.keys(layer).dtype)
        self.values(layer)[slots, :, :length] = values.to(self.values(layer).dtype)

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())


def kv_cache_bytes(*, layers: int, slots: int, embed_dim: int, max_len: int, dtype: torch.dtype) -> int:
    """What a StaticKVCache of this shape takes, without allocating it (heads x head_dim = embed_dim)."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * layers * slots * max_len * embed_dim * element
