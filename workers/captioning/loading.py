"""from_pretrained with one clear error when a model cannot be had."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from shared.core.errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_pretrained(loader: Callable[..., T], source: str, *, flag: str, what: str, **kwargs: object) -> T:
    """Call loader(source, **kwargs); turn any failure into a ModelLoadError saying what to do.

    SDPA attention is asked for first; a model that lacks it is loaded with the default.
    """
    try:
        try:
            return loader(source, **kwargs)
        except (ValueError, ImportError) as exc:
            if "attn_implementation" in kwargs and "attention" in str(exc).lower():
                log.info("%s: SDPA not offered (%s); using the default attention", what, exc)
                rest = {k: v for k, v in kwargs.items() if k != "attn_implementation"}
                return loader(source, **rest)
            raise
    except Exception as exc:
        raise ModelLoadError(_explain(source, flag=flag, what=what, exc=exc)) from exc


def _explain(source: str, *, flag: str, what: str, exc: BaseException) -> str:
    local = Path(source).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    if local.exists():
        hint = f"the folder {local} exists but does not hold a loadable {what} ({type(exc).__name__}: {exc})"
        return f"{hint}: pass {flag} DIR with a folder written by save_pretrained"
    if source.startswith((".", "/", "~")):
        return f"{what} not found at {source}: no such folder; pass {flag} DIR"
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if offline:
        return (
            f"{what} {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
            f"({reason}); pre-download it on a host with internet "
            f"(`hf download {source}`) or pass {flag} DIR"
        )
    return (
        f"{what} {source!r} could not be loaded ({reason}); this host may have no access to "
        f"the Hugging Face hub: pre-download it (`hf download {source}`) into HF_HOME, "
        f"or pass {flag} DIR with a local copy"
    )


def load_model(
    model_loader: Callable[..., Any],
    source: str,
    *,
    flag: str,
    what: str,
    device: torch.device,
    dtype: torch.dtype,
    processor_loader: Callable[..., Any] | None = None,
) -> tuple[Any, Any]:
    """(processor, model) from one source: SDPA attention asked for, on the device, in eval mode.

    processor_loader: a family's own processor class's from_pretrained (AutoProcessor's else)."""
    from transformers import AutoProcessor

    processor_loader = processor_loader or AutoProcessor.from_pretrained
    processor = load_pretrained(processor_loader, source, flag=flag, what=what)
    model = load_pretrained(
        model_loader, source, flag=flag, what=what, dtype=dtype, attn_implementation="sdpa"
    )
    return processor, model.to(device).eval()


def config_model_type(source: str, *, flag: str, what: str) -> str:
    """A checkpoint's model_type, read from its config alone (no weights, no class needed)."""
    from transformers import PretrainedConfig

    config, _ = load_pretrained(PretrainedConfig.get_config_dict, source, flag=flag, what=what)
    return str(config.get("model_type", ""))


def load_caption_model(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    processor_loader: Callable[..., Any] | None = None,
) -> tuple[Any, Any]:
    """(processor, model) of an image-to-text checkpoint given as --caption-model."""
    from transformers import AutoModelForImageTextToText

    return load_model(
        AutoModelForImageTextToText.from_pretrained,
        source,
        flag="--caption-model",
        what="caption model",
        device=device,
        dtype=dtype,
        processor_loader=processor_loader,
    )
