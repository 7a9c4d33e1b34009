"""kcap's own greedy Kosmos-2 decoder: per-image prefill into a static cache, one fixed-shape
step over all slots, and slots in place of fixed batches.

Invariant: for every image the new token ids are those transformers' `generate` returns
with greedy decoding (num_beams=1, no repetition controls, no other logits processors), up
to float rounding: the prefill is transformers' own text model (so the image embeddings, the
image position mask and the positions are its own), and the step (kosmos2_step.py) is the
same computation over a static cache. When a slot's row emits end-of-text or reaches
max_new_tokens its ids are handed back and the next waiting image is prefilled into that
slot at once, so rows that stopped early never compute padding. `generate` does that for
the images of one call; `admit`/`step` let a caller (decode_stream.py) feed images that
arrive while others decode, each row under its own prompt and token limit: a row's
attention reads only its own slot, so rows of different prompts never mix.

On CUDA out-of-memory the decoder halves its slot count and runs the call again (greedy
decoding is deterministic, so nothing differs but the time); at one slot it gives up.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional

from workers.captioning.device import is_out_of_memory
from workers.captioning.families.kosmos2.kosmos2_step import Kosmos2DecodeStep
from workers.captioning.families.kosmos2.kv_cache import StaticKVCache

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
    slot_steps: int = 0  # rows computed, busy or idle: the steps' widths summed
    slots: int = 0
    step_s: float = 0.0
    prefill_s: float = 0.0
    tokens: int = 0

    @property
    def occupancy(self) -> float:
        return self.busy_slot_steps / self.slot_steps if self.slot_steps else 0.0


@dataclass
class SlotRow:
    """One image's row: its new ids so far and when it stops. `ticket` is the caller's."""

    ticket: int
    max_new_tokens: int
    ids: list[int] = field(default_factory=list)

    def done(self, eos_token_ids: frozenset[int]) -> bool:
        return self.ids[-1] in eos_token_ids or len(self.ids) >= self.max_new_tokens


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
        self.stats = DecodeStats(slots=slots)
        self._rows: dict[int, SlotRow] = {}  # busy slot -> its row
        self._reset_slots()

    def _reset_slots(self) -> None:
        """Each slot's last token and its length (where the step writes), as the step reads
        them; the lengths again on the host, so the attention span needs no device sync."""
        self._tokens = torch.full((self.slots,), self.pad_token_id, dtype=torch.long, device=self.device)
        self._lengths = torch.zeros(self.slots, dtype=torch.long, device=self.device)
        self._host_lengths = [0] * self.slots

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
        step_module = Kosmos2DecodeStep(self.model, cache, compiled=self.compile_step)
        step: Step = step_module
        if self.compile_step:
            # CUDA: "reduce-overhead" captures the step as a CUDA graph, the whole point on a
            # GPU (one launch per step instead of one per op). CPU: plain inductor fusion.
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            # dynamic: the attention span is a symbol, so one compile serves every span (on
            # CUDA, one recorded graph per span value, which is cheap next to a compile).
            step = torch.compile(step_module, mode=mode, fullgraph=True, dynamic=True)
        self._cache, self._step = cache, step
        self._reset_slots()
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

    # -- the slots -----------------------------------------------------------
    @property
    def busy(self) -> int:
        """Slots whose row is still decoding."""
        return len(self._rows)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self._rows)

    def fits(self, prompt: PromptInputs, max_new_tokens: int) -> bool:
        """Whether rows of this prompt can join now: the cache is long enough, or it is idle
        (then admit reallocates it; a busy cache is never reallocated under its rows)."""
        cache = self._cache
        needed = prompt.length + max_new_tokens
        return not self._rows or (cache is not None and cache.slots == self.slots and cache.max_len >= needed)

    @torch.inference_mode()
    def admit(
        self, rows: Sequence[SlotRow], pixels: Sequence[torch.Tensor], prompt: PromptInputs
    ) -> list[SlotRow]:
        """Prefill `rows` (one prompt, one image each) into the lowest free slots.

        Returns the rows that already ended at their first token (their slots stay free)."""
        if len(rows) > self.free_slots:
            raise ValueError(f"{len(rows)} rows for {self.free_slots} free slots")
        if not self.fits(prompt, max(row.max_new_tokens for row in rows)):
            raise ValueError("the cache is too short for this prompt while rows are decoding")
        cache, _ = self._ensure_cache(prompt.length + max(row.max_new_tokens for row in rows))
        slots = [slot for slot in range(self.slots) if slot not in self._rows][: len(rows)]
        started = time.perf_counter()
        stacked = torch.stack(list(pixels)).to(self.device, dtype=self.dtype)
        firsts = self._prefill(cache, slots, stacked, prompt)
        self.stats.prefill_s += time.perf_counter() - started
        self.stats.prefills += 1
        finished: list[SlotRow] = []
        for slot, row, first in zip(slots, rows, firsts, strict=True):
            row.ids.append(first)
            self.stats.tokens += 1
            if row.done(self.eos_token_ids):
                finished.append(row)
            else:
                self._rows[slot] = row
                self._host_lengths[slot] = prompt.length
        index = torch.tensor(slots, device=self.device)
        self._tokens[index] = torch.tensor(firsts, device=self.device)
        self._lengths[index] = prompt.length
        return finished

    @torch.inference_mode()
    def step(self) -> list[SlotRow]:
        """One new token for every busy row; returns the rows that ended (their slots free)."""
        if not self._rows or self._step is None or self._cache is None:
            return []
        started = time.perf_counter()
        # A compiled step keeps its one shape; an eager one runs only up to the highest busy
        # slot (admit fills the lowest free ones), so a few rows do not pay for idle slots.
        width = self.slots if self.compile_step else max(self._rows) + 1
        longest = max(self._host_lengths[slot] for slot in self._rows) + 1
        span = min(-(-longest // _SPAN_QUANTUM) * _SPAN_QUANTUM, self._cache.max_len)
        next_tokens = self._step(self._tokens[:width], self._lengths[:width], span)
        emitted: list[int] = next_tokens.tolist()  # the one host sync per step
        # Copied into the decoder's own buffer: a CUDA graph reuses its output on the next replay.
        self._tokens[:width] = next_tokens
        # Only busy slots advance; an idle slot keeps writing its stale position 0, which
        # the next prefill into it overwrites.
        busy = torch.zeros(self.slots, dtype=torch.long, device=self.device)
        busy[list(self._rows)] = 1
        self._lengths = (self._lengths + busy) * busy
        self.stats.step_s += time.perf_counter() - started
        self.stats.steps += 1
        self.stats.busy_slot_steps += len(self._rows)
        self.stats.slot_steps += width
        finished: list[SlotRow] = []
        for slot, row in list(self._rows.items()):
            self._host_lengths[slot] += 1
            row.ids.append(emitted[slot])
            self.stats.tokens += 1
            if row.done(self.eos_token_ids):
                del self._rows[slot]
                finished.append(row)
        return finished

    def evict(self) -> list[SlotRow]:
        """Take every row out of its slot, unfinished (to run again from its start)."""
        rows = list(self._rows.values())
        self._rows.clear()
        for row in rows:
            row.ids.clear()
        return rows

    def halve(self) -> list[SlotRow]:
        """After CUDA out-of-memory: half the slots, a new cache on the next admit, and the
        rows that were decoding handed back to run again (greedy decoding is deterministic,
        so nothing differs but the time)."""
        rows = self.evict()
        self.slots //= 2
        self._release()
        return rows

    # -- one call, all images ------------------------------------------------
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
                    self.evict()
                    raise
                log.warning(
                    "out of memory in the static decoder at %d slots; "
                    "halving to %d and running the %d images again",
                    self.slots,
                    self.slots // 2,
                    len(pixel_values),
                )
                self.halve()

    def _generate(
        self, pixel_values: Sequence[torch.Tensor], *, prompt: PromptInputs, max_new_tokens: int
    ) -> list[list[int]]:
        if max_new_tokens < 1 or not pixel_values:
            return [[] for _ in pixel_values]
        if self._rows:
            raise RuntimeError("generate() on a decoder whose slots are streaming other rows")
        self.stats = DecodeStats(slots=self.slots)
        rows = [SlotRow(ticket=index, max_new_tokens=max_new_tokens) for index in range(len(pixel_values))]
        waiting: deque[int] = deque(range(len(pixel_values)))
        while waiting or self._rows:
            if waiting and self.free_slots:
                taken = [waiting.popleft() for _ in range(min(self.free_slots, len(waiting)))]
                self.admit([rows[i] for i in taken], [pixel_values[i] for i in taken], prompt)
                if self.free_slots and waiting:
                    continue  # a row ended at its first token: fill its slot before stepping
            self.step()
        return [row.ids for row in rows]

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
