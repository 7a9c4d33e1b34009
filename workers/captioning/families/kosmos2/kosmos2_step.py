"""One greedy Kosmos-2 decoding step over every slot at once, at fixed shapes.

Invariant: the step computes exactly what transformers' Kosmos2TextTransformer computes for
one new token with a cache (modeling_kosmos2.py): token embedding times embed_scale, plus the
sinusoidal position of a non-pad token (cache length + padding_idx + 1, the position
`create_position_ids_from_input_ids` gives it), pre-norm attention with the inner attention
layer norm, the FFN with its inner layer norm, the final layer norm and the untied output
head. Its inputs and outputs have the same shapes on every call (slots tokens in, slots
tokens out); only the attention span (how far into the cache it reads) takes a few rounded
values. So it compiles once, and on CUDA replays one recorded graph per span.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

from workers.captioning.families.kosmos2.kv_cache import StaticKVCache


class Kosmos2DecodeStep(nn.Module):
    """The text decoder of a loaded Kosmos2ForConditionalGeneration, reading a static cache."""

    # Typed Any: transformers' modules are reached by attribute, which nn.Module's typing
    # cannot follow.
    embed_tokens: Any
    layers: Any
    final_norm: Any
    lm_head: Any
    positions: Any
    key_index: Any

    def __init__(self, model: Any, cache: StaticKVCache, *, compiled: bool = False) -> None:
        """compiled: the step will run under torch.compile, which picks the attention's form."""
        super().__init__()
        self.compiled = compiled
        text = model.text_model.model
        self.embed_tokens = text.embed_tokens
        self.layers = text.layers
        self.final_norm = text.layer_norm
        self.lm_head = model.text_model.lm_head
        self.embed_scale = float(text.embed_scale)
        self.padding_idx = int(text.embed_positions.padding_idx)
        self.cache = cache
        first = self.layers[0].self_attn
        self.heads = int(first.num_heads)
        self.head_dim = int(first.head_dim)
        # The position table, long enough for every cache position (transformers grows its
        # own on demand; a fixed-shape step cannot, so it is built at full length here).
        table = text.embed_positions.get_embedding(
            cache.max_len + self.padding_idx + 2, text.embed_positions.embedding_dim, self.padding_idx
        )
        self.register_buffer("positions", table.to(self.embed_tokens.weight), persistent=False)
        self.register_buffer(
            "key_index", torch.arange(cache.max_len, device=self.embed_tokens.weight.device), persistent=False
        )

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, span: int) -> torch.Tensor:
        """tokens (slots,) are each slot's last token, written at position lengths (slots,).

        Attention reads the first `span` cache positions (more than every busy row's length):
        reading the whole preallocated cache every step would make a step cost what the
        longest possible caption costs. The caller rounds span to a few values; a compiled
        step treats it as a symbol (one compile for all of them).

        Returns each slot's next token (argmax of the logits, ties to the lowest id as in
        generate). The caller advances lengths.
        """
        slots = tokens.shape[0]
        rows = torch.arange(slots, device=tokens.device)
        # A generated pad token takes position padding_idx (a zero row), as in transformers.
        position = torch.where(tokens != self.padding_idx, lengths + self.padding_idx + 1, self.padding_idx)
        hidden = self.embed_tokens(tokens) * self.embed_scale + self.positions[position]
        hidden = hidden.unsqueeze(1)  # (slots, 1, embed)
        mask = (self.key_index[:span].unsqueeze(0) <= lengths.unsqueeze(1)).view(slots, 1, 1, -1)
        for index, layer in enumerate(self.layers):
            normed = layer.self_attn_layer_norm(hidden)
            hidden = hidden + self._attend(layer.self_attn, normed, index, rows, lengths, mask, span)
            hidden = hidden + layer.ffn(layer.final_layer_norm(hidden))
        logits = self.lm_head(self.final_norm(hidden[:, 0]))
        next_tokens: torch.Tensor = logits.float().argmax(dim=-1)
        return next_tokens

    def _attend(
        self,
        attn: Any,
        hidden: torch.Tensor,
        layer: int,
        rows: torch.Tensor,
        lengths: torch.Tensor,
        mask: torch.Tensor,
        span: int,
    ) -> torch.Tensor:
        slots = hidden.shape[0]
        shape = (slots, self.heads, self.head_dim)
        query = attn.q_proj(hidden).view(shape).unsqueeze(2)
        keys, values = self.cache.keys(layer), self.cache.values(layer)
        if slots < self.cache.slots:
            # An eager caller with fewer images than slots runs fewer rows. (Never under
            # compile: there the whole buffer is written in place, where a slice of it would
            # make inductor copy the cache on every step.)
            keys, values = keys[:slots], values[:slots]
        keys[rows, :, lengths] = attn.k_proj(hidden).view(shape)
        values[rows, :, lengths] = attn.v_proj(hidden).view(shape)
        keys, values = keys[:, :, :span], values[:, :, :span]
        if self.compiled:
            # One query per row: products and sums over the cache, and a softmax, which
            # inductor fuses into one pass over the cache (the form measured on the H100).
            scores = (query * keys).sum(dim=-1) * attn.scaling  # (slots, heads, span)
            scores = scores.masked_fill(~mask.view(slots, 1, -1), torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1).unsqueeze(-1)
            out = (weights * values).sum(dim=2)  # (slots, heads, head_dim)
        else:
            # Eager, the products above would be written out whole and read back (the step
            # is bound by reading the cache); torch's fused attention reads it once: 1.4x
            # faster steps on the CPU benchmark's deep model at 64 slots.
            out = functional.scaled_dot_product_attention(
                query, keys, values, attn_mask=mask, scale=attn.scaling
            )
        out = out.reshape(slots, 1, -1)
        out = attn.inner_attn_ln(out)
        projected: torch.Tensor = attn.out_proj(out)
        return projected
