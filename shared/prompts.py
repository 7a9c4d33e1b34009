"""Prompt presets for Kosmos-2."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.settings import DEFAULT_PROMPT

PRESETS: dict[str, str] = {
    "detailed": DEFAULT_PROMPT,  # the original script's instruction, the default
    "brief": "<grounding>An image of",
    "grounded-detailed": "<grounding> Describe this image in detail:",
}


def resolve_prompts(spec: str) -> list[str]:
    """Newline-separated prompts; each is a preset name or free text."""
    prompts = [PRESETS.get(line.strip(), line.strip()) for line in spec.split("\n") if line.strip()]
    if not prompts:
        raise ConfigError("no prompt: pass --prompt TEXT or a preset (detailed, brief, grounded-detailed)")
    return prompts
