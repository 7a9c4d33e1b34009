"""kcap's own greedy Kosmos-2 decoder: per-image prefill into a static cache, one fixed-shape
step over all slots, and a slot scheduler in place of fixed batches.

Invariant: for every image the new token ids are those transformers' `generate` returns
with greedy decoding (num_beams=1, no repetition controls, no other logits processors), up
to float rounding: the prefill is transformers' own text model (so the image embeddings, the
image position mask and the positions are its own), and the step (kosmos2_step.py) is the
same computation over a static cache. When a slot's row emits end-of-text or reaches
max_new_tokens its ids are handed back and the next waiting image is prefilled into that
slot at once, so rows that stopped early never compute padding.

On CUDA out-of-memory the decoder halves its slot count and runs the call again (greedy
decoding is deterministic, so nothing differs but the time); at one slot it gives up.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional

from workers.captioning.device import is_out_of_memory
from workers.captioning.kosmos2_step import Kosmos2DecodeStep
from workers.captioning.kv_cache import StaticKVCache

log = logging.getLogger(__name__)

# (tokens, lengths, span) -> next tokens, each of shape (slots,): the eager or compiled step.
Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

# Attention reads the cache up to the longest busy row, rounded up to this many positions.
_SPAN_QUANTUM = 32

# The cache length is rounded up to this, so prompts of slightly different lengths share one
# cache (and one compiled step) instead of each reallocating it.
_LENGTH_QUANTUM = 64


@dataclass(frozen=True)
class PromptInputs:
    """One prompt's processor output: every image of a call shares it."""

    input_ids: torch.Tensor  # (1, length)
    attention_mask: torch.Tensor  # (1, length)
    image_embeds_position_mask: torch.Tensor  # (1, length)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass
class DecodeStats:
    """What the last call did: steps run, and how full the slots were on average."""

    steps: int = 0
    prefills: int = 0
    busy_slot_steps: int = 0
    slots: int = 0
    step_s: float = 0.0
    prefill_s: float = 0.0
    tokens: int = 0

    @property
    def occupancy(self) -> float:
        return self.busy_slot_steps / (self.steps * self.slots) if self.steps and self.slots else 0.0


class Kosmos2Decoder:
    """Greedy decoding of many images with `slots` rows decoded at a time."""

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        compile_step: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.model = model
        self.slots = slots
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.compile_step = compile_step
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype
        self._cache: StaticKVCache | None = None
        self._step: Step | None = None
        self.stats = DecodeStats()

    # -- the cache and the step ---------------------------------------------
    def _ensure_cache(self, max_len: int) -> tuple[StaticKVCache, Step]:
        cache = self._cache
        if (
            cache is not None
            and cache.slots == self.slots
            and cache.max_len >= max_len
            and self._step is not None
        ):
            return cache, self._step
        self._release()
        text_config = self.model.config.text_config
        heads = int(text_config.attention_heads)
        length = -(-max_len // _LENGTH_QUANTUM) * _LENGTH_QUANTUM
        cache = StaticKVCache(
            layers=int(text_config.layers),
            slots=self.slots,
            heads=heads,
            max_len=length,
            head_dim=int(text_config.embed_dim) // heads,
            device=self.device,
            dtype=self.dtype,
        )
        step_module = Kosmos2DecodeStep(self.model, cache)
        step: Step = step_module
        if self.compile_step:
            # CUDA: "reduce-overhead" captures the step as a CUDA graph, the whole point on a
            # GPU (one launch per step instead of one per op). CPU: plain inductor fusion.
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            # dynamic: the attention span is a symbol, so one compile serves every span (on
            # CUDA, one recorded graph per span value, which is cheap next to a compile).
            step = torch.compile(step_module, mode=mode, fullgraph=True, dynamic=True)
        self._cache, self._step = cache, step
        log.info(
            "static KV cache: %d slots x %d positions, %.1f MiB (%s)",
            self.slots,
            length,
            cache.nbytes / 2**20,
            "compiled step" if self.compile_step else "eager step",
        )
        return cache, step

    def _release(self) -> None:
        self._cache = None
        self._step = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- prefill -------------------------------------------------------------
    def _prefill(
        self, cache: StaticKVCache, slots: list[int], pixels: torch.Tensor, prompt: PromptInputs
    ) -> list[int]:
        """Vision tower, connector and prompt for `pixels` (n images), written into `slots`;
        returns each image's first new token."""
        n = len(slots)
        image_embeds = _image_embeds(self.model, pixels)
        text = self.model.text_model
        output = text.model(
            input_ids=prompt.input_ids.expand(n, -1).to(self.device),
            attention_mask=prompt.attention_mask.expand(n, -1).to(self.device),
            image_embeds=image_embeds,
            image_embeds_position_mask=prompt.image_embeds_position_mask.expand(n, -1).to(self.device),
            use_cache=True,
        )
        index = torch.tensor(slots, device=self.device)
        # transformers 5 names the returned cache `cache` (older 5.x: `past_key_values`).
        prefix = getattr(output, "cache", None) or output.past_key_values
        for layer, entry in enumerate(prefix.layers):
            cache.write_prefix(layer, index, entry.keys, entry.values)
        logits = text.lm_head(output.last_hidden_state[:, -1])
        first: list[int] = logits.float().argmax(dim=-1).tolist()
        return first

    # -- the scheduler -------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, pixel_values: Sequence[torch.Tensor], *, prompt: PromptInputs, max_new_tokens: int
    ) -> list[list[int]]:
        """New token ids of every image (end-of-text included when emitted), in input order."""
        while True:
            try:
                return self._generate(pixel_values, prompt=prompt, max_new_tokens=max_new_tokens)
            except Exception as exc:
                if not is_out_of_memory(exc) or self.slots == 1:
                    raise
                log.warning(
                    "out of memory in the static decoder at %d slots; "
                    "halving to %d and running the %d images again",
                    self.slots,
                    self.slots // 2,
                    len(pixel_values),
                )
                self.slots //= 2
                self._release()

    def _generate(
        self, pixel_values: Sequence[torch.Tensor], *, prompt: PromptInputs, max_new_tokens: int
    ) -> list[list[int]]:
        if max_new_tokens < 1 or not pixel_values:
            return [[] for _ in pixel_values]
        cache, step = self._ensure_cache(prompt.length + max_new_tokens)
        # A compiled step keeps its one shape; an eager one runs only as many rows as there
        # are images, so a small batch does not pay for idle slots.
        width = self.slots if self.compile_step else min(self.slots, len(pixel_values))
        stats = DecodeStats(slots=width)
        results: list[list[int]] = [[] for _ in pixel_values]
        waiting: deque[int] = deque(range(len(pixel_values)))
        owner: dict[int, int] = {}  # slot -> image index
        tokens = torch.full((width,), self.pad_token_id, dtype=torch.long, device=self.device)
        lengths = torch.zeros(width, dtype=torch.long, device=self.device)
        host_lengths = [0] * width  # the same, on the host: the attention span needs no sync
        while waiting or owner:
            free = [slot for slot in range(width) if slot not in owner]
            if free and waiting:
                taken = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
                slots = free[: len(taken)]
                started = time.perf_counter()
                pixels = torch.stack([pixel_values[i] for i in taken]).to(self.device, dtype=self.dtype)
                firsts = self._prefill(cache, slots, pixels, prompt)
                stats.prefill_s += time.perf_counter() - started
                stats.prefills += 1
                for slot, image, first in zip(slots, taken, firsts, strict=True):
                    results[image].append(first)
                    if not self._done(results[image], max_new_tokens):
                        owner[slot] = image
                slot_index = torch.tensor(slots, device=self.device)
                tokens[slot_index] = torch.tensor(firsts, device=self.device)
                lengths[slot_index] = prompt.length
                for slot in slots:
                    host_lengths[slot] = prompt.length
                if len(owner) < width and waiting:
                    continue  # a row ended at its first token: fill its slot before stepping
            if not owner:
                continue
            started = time.perf_counter()
            longest = max(host_lengths[slot] for slot in owner) + 1
            span = min(-(-longest // _SPAN_QUANTUM) * _SPAN_QUANTUM, cache.max_len)
            next_tokens = step(tokens, lengths, span)
            emitted: list[int] = next_tokens.tolist()  # the one host sync per step
            stats.step_s += time.perf_counter() - started
            stats.steps += 1
            stats.busy_slot_steps += len(owner)
            # Only busy slots advance; an idle slot keeps writing its stale position 0,
            # which the next prefill into it overwrites.
            busy = torch.zeros(width, dtype=torch.long, device=self.device)
            busy[list(owner)] = 1
            tokens = next_tokens.clone()  # a CUDA graph reuses its output buffer on the next replay
            lengths = (lengths + busy) * busy
            for slot, image in list(owner.items()):
                host_lengths[slot] += 1
                results[image].append(emitted[slot])
                if self._done(results[image], max_new_tokens):
                    del owner[slot]
        stats.tokens = sum(len(r) for r in results)
        self.stats = stats
        return results

    def _done(self, ids: list[int], max_new_tokens: int) -> bool:
        return ids[-1] in self.eos_token_ids or len(ids) >= max_new_tokens

    @property
    def cache_bytes(self) -> int:
        return self._cache.nbytes if self._cache is not None else 0


def _image_embeds(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The connector's output: what transformers' Kosmos-2 `get_image_features` returns (the
    vision tower's last state through post_layernorm, normalised, then the connector), done
    by hand where an older transformers 5.x has no such method."""
    if hasattr(model, "get_image_features"):
        embeds: torch.Tensor = model.get_image_features(pixels, return_dict=True).pooler_output
        return embeds
    hidden = model.vision_model(pixel_values=pixels)[0]
    hidden = functional.normalize(model.vision_model.model.post_layernorm(hidden), dim=-1)
    embeds, _ = model.image_to_text_projection(hidden)
    return embeds


def pad_rows(rows: Sequence[Sequence[int]], *, pad_token_id: int) -> torch.Tensor:
    """Rows of new ids as one tensor, padded on the right as `generate` pads finished rows."""
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
