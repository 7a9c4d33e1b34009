"""Prompt presets for Kosmos-2, and the original script's instruction."""

from __future__ import annotations

from shared.core.errors import ConfigError

# The original script's instruction prompt, kept verbatim: the default.
DEFAULT_PROMPT = (
    "Give a detailed description of this image, including any subject matter, "
    "style of art if any, and the context:"
)

PRESETS: dict[str, str] = {
    "detailed": DEFAULT_PROMPT,
    "brief": "<grounding>An image of",
    "grounded-detailed": "<grounding> Describe this image in detail:",
}


def resolve_prompts(spec: str) -> list[str]:
    """Newline-separated prompts; each is a preset name or free text."""
    prompts = [PRESETS.get(line.strip(), line.strip()) for line in spec.split("\n") if line.strip()]
    if not prompts:
        raise ConfigError(f"no prompt: pass --prompt TEXT or a preset ({', '.join(PRESETS)})")
    return prompts
