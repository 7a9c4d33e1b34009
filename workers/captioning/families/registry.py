"""Which adapter captions with a checkpoint: chosen by its config's ``model_type``.

An unsupported model_type, or a family whose extra packages are missing, fails the worker
at start (before it takes a job) with a sentence that says what is supported or which pip
line fixes it: a job is never taken by a worker that cannot caption it.
"""

from __future__ import annotations

import importlib.util
import logging
from types import ModuleType
from typing import Any

import torch

from shared.core.errors import ConfigError
from shared.core.settings import Settings
from workers.captioning.families import blip2, florence2, idefics3, llava, qwen_vl
from workers.captioning.families.base import CaptionAdapter
from workers.captioning.families.kosmos2 import adapter as kosmos2
from workers.captioning.loading import config_model_type

log = logging.getLogger(__name__)

_MODULES: tuple[ModuleType, ...] = (kosmos2, florence2, qwen_vl, llava, idefics3, blip2)
# model_type -> the module holding its adapter.
_BY_MODEL_TYPE: dict[str, ModuleType] = {t: m for m in _MODULES for t in m.MODEL_TYPES}
# The pip extra that brings each importable package a family needs.
_EXTRAS: dict[str, str] = {"num2words": "models"}


def supported() -> dict[str, str]:
    """model_type -> family name, for every supported family."""
    return {t: m.FAMILIES[t] for m in _MODULES for t in m.MODEL_TYPES}


def model_type_of(source: str) -> str:
    """The caption checkpoint's model_type, read from its config alone."""
    return config_model_type(source, flag="--caption-model", what="caption model")


def check_family(model_type: str, *, source: str) -> ModuleType:
    """The family module for model_type, or a ConfigError listing the supported families."""
    module = _BY_MODEL_TYPE.get(model_type)
    if module is None:
        families = ", ".join(f"{name} ({t})" for t, name in supported().items())
        raise ConfigError(
            f"caption model {source} is a {model_type or 'model without a model_type'!r}, which kcap "
            f"cannot caption with; the supported families (model_type) are: {families}"
        )
    missing = [name for name in module.NEEDS.get(model_type, ()) if importlib.util.find_spec(name) is None]
    if missing:
        extra = sorted({_EXTRAS.get(name, name) for name in missing})
        raise ConfigError(
            f"caption model {source} ({module.FAMILIES[model_type]}) needs {', '.join(missing)}, "
            f"which is not installed: pip install 'kcap[{','.join(extra)}]'"
        )
    return module


def load_captioner(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_image_tokens: int,
    kosmos2_options: dict[str, Any] | None = None,
) -> CaptionAdapter:
    """The adapter of the checkpoint's family, with its model loaded on the device.

    kosmos2_options go to Kosmos-2 alone: its decoder choice, slots and compiled step."""
    model_type = model_type_of(source)
    module = check_family(model_type, source=source)
    extra = (kosmos2_options or {}) if module is kosmos2 else {}
    adapter: CaptionAdapter = module.CLASSES[model_type](
        source, device=device, dtype=dtype, max_image_tokens=max_image_tokens, **extra
    )
    log.info("caption model %s: family %s (model_type %s)", source, adapter.family, model_type)
    return adapter


def load_for_settings(settings: Settings, *, device: torch.device, dtype: torch.dtype) -> CaptionAdapter:
    """The worker's captioner: the family adapter, compiled when asked (Kosmos-2 only)."""
    captioner = load_captioner(
        settings.caption_model,
        device=device,
        dtype=dtype,
        max_image_tokens=settings.max_image_tokens,
        kosmos2_options={
            "decoder": settings.decoder,
            # Not capped by the batch size: the worker streams images from all its pool
            # threads into the slots (decode_stream.py), and sizes the pool to keep them full.
            "decoder_slots": settings.decoder_slots,
            "compile_decoder": settings.compile,
        },
    )
    if settings.compile:
        if not isinstance(captioner, kosmos2.Kosmos2Adapter):
            raise ConfigError(
                f"--compile supports Kosmos-2 only, not {captioner.family}: run without --compile "
                f"(KCAP_COMPILE=0)"
            )
        from workers.captioning.families.kosmos2.compiling import compile_captioner

        compile_captioner(captioner, prompt=settings.prompts[0], max_new_tokens=settings.max_new_tokens)
    return captioner
