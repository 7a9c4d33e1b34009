"""from_pretrained with one clear error when a model cannot be had."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

from shared.core.errors import ModelLoadError
from shared.core.logs import adopt_library_logger

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


def adopt_library_logs() -> None:
    """transformers' and the hub's records go through kcap's logging (the log file, the quiet
    console) instead of handlers of their own on stderr."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    adopt_library_logger("huggingface_hub")


def require_models(models: list[tuple[str, str, str]]) -> None:
    """Check that every (source, flag, what) can be had before any is loaded: one error naming
    each that cannot, so a user supplies them all at once instead of one per try.

    Reading a config alone is cheap; the configs are read at once, so a host cut off from the
    hub waits out the hub's retries once, not once per model.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(models)), thread_name_prefix="kcap-model-check") as pool:
        checks = [pool.submit(config_model_type, src, flag=flag, what=what) for src, flag, what in models]
    failures = [(source, check.exception()) for (source, _, _), check in zip(models, checks, strict=True)]
    problems = [(source, exc) for source, exc in failures if exc is not None]
    for _, exc in problems:
        if not isinstance(exc, ModelLoadError):
            raise exc
    if not problems:
        return
    from_hub = any(not _is_path(source) for source, _ in problems)
    hint = " To try kcap without them: `kcap demo` builds tiny models here." if from_hub else ""
    if len(problems) == 1:
        raise ModelLoadError(f"{problems[0][1]}.{hint}")
    listed = "".join(f"\n  - {exc}" for _, exc in problems)
    raise ModelLoadError(f"{len(problems)} models cannot be had:{listed}\n{hint.strip()}".rstrip())


def _is_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def _explain(source: str, *, flag: str, what: str, exc: BaseException) -> str:
    local = Path(source).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    if local.exists():
        hint = f"the folder {local} exists but does not hold a loadable {what} ({type(exc).__name__}: {exc})"
        return f"{hint}: pass {flag} DIR with a folder written by save_pretrained"
    if _is_path(source):
        return f"{what} not found at {source}: no such folder; pass {flag} DIR"
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if offline:
        return (
            f"{what} {source!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: "
            f"pre-download it on a host with internet "
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
