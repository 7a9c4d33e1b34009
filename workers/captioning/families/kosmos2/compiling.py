"""`--compile`: torch.compile the captioner's vision tower and decoder, compiled at start.

Why these two parts: the vision tower runs once per batch on fixed-size pixels, and the
decoder runs once per generated token, where eager mode pays a kernel launch (GPU) or an
operator dispatch (CPU) for every small op. Fusing them is where compile saves time;
`generate`'s Python loop itself cannot be compiled (its cache grows every step).

Shapes are dynamic, so one graph serves every batch size and every decoding step instead
of one recompile per size. The warm-up runs batches of 2, 3 and 1 (see _WARMUP_SIZES), so
every graph is built before the worker takes its first job: no batch stalls on a compile
later, and a compiler that is missing or broken fails the start with a clear error rather
than failing jobs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from PIL import Image

from shared.core.decoding import Decoder
from shared.core.errors import ConfigError
from workers.captioning.families.kosmos2.decoder_choice import choose_decoder

log = logging.getLogger(__name__)

# Warm-up captions are this long: the prefill step and the one-token steps each get their
# graph; more tokens would only add time.
_WARMUP_TOKENS = 3
_GRAPH_LIMIT = 64
# Two sizes above 1 make torch mark the batch dimension dynamic (the first graph is built
# for the size it saw); 1 gets its own graph, as torch specialises it.
_WARMUP_SIZES = (2, 3, 1)


def compile_captioner(captioner: Any, *, prompt: str, max_new_tokens: int = _WARMUP_TOKENS) -> None:
    """Wrap the captioner's model parts in torch.compile and build their graphs now.

    Raises ConfigError when compilation fails.
    """
    model = captioner.model
    started = time.perf_counter()
    # Both parts run through one transformers decorator, so their graphs share one code
    # object's cache: prefill and decoding steps, batch 1 and larger, fresh and grown caches
    # need more than torch's default of 8 entries.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _GRAPH_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * _GRAPH_LIMIT
    )
    try:
        # Module.compile compiles in place: the modules keep their type and weight names.
        model.vision_model.compile(dynamic=True)
        model.text_model.compile(dynamic=True)
        blank = captioner.preprocess(Image.new("RGB", (64, 64), (127, 127, 127)))
        for size in _WARMUP_SIZES:
            captioner.forward([blank] * size, prompt=prompt, max_new_tokens=_WARMUP_TOKENS)
        # kcap's static decoder compiles its own fixed-shape step (a CUDA graph on a GPU):
        # build it now too, where it is the decoder greedy batches will use, for a caption
        # as long as jobs may ask for, so that every attention span is met before the first job.
        # Its prefills go through the compiled vision tower in groups of any size, which
        # need the same graphs as generate's batches: the same warm-up sizes.
        if choose_decoder(captioner.model, captioner.decoder_choice) is Decoder.KCAP_STATIC:
            for index, size in enumerate(_WARMUP_SIZES):
                tokens = max_new_tokens if index == 0 else _WARMUP_TOKENS
                captioner.forward_static([blank] * size, prompt=prompt, max_new_tokens=tokens)
    except Exception as exc:
        raise ConfigError(
            f"--compile: torch.compile failed on this host ({type(exc).__name__}: "
            f"{_first_line(exc)}); it needs a working C++ compiler (CPU) or Triton (GPU). "
            f"Run without --compile (KCAP_COMPILE=0)"
        ) from exc
    # From here on, a graph that fails to recompile (an unseen shape) runs eagerly instead
    # of failing the batch: slower, but no job is lost to the optimisation.
    torch._dynamo.config.suppress_errors = True
    log.info("torch.compile: caption model compiled and warmed up in %.1fs", time.perf_counter() - started)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
