"""Every tiny caption and scorer model by family name: what the family tests parametrize over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from workers.tiny.blip2 import build_blip2
from workers.tiny.clip import build_clip
from workers.tiny.florence2 import build_florence2
from workers.tiny.idefics3 import build_idefics3
from workers.tiny.kosmos2 import build_kosmos2
from workers.tiny.llava import build_llava
from workers.tiny.siglip import build_siglip, build_siglip2

# Qwen2.5-VL / Qwen3-VL, SmolVLM and LLaVA-OneVision are not here: their processors hold a
# video processor, which needs torchvision, and no CPU build of it lies on this disk.
CAPTIONERS: Final[dict[str, Callable[[Path], Path]]] = {
    "kosmos-2": build_kosmos2,
    "florence-2": build_florence2,
    "llava": build_llava,
    "idefics3": build_idefics3,
    "blip-2": build_blip2,
}

SCORERS: Final[dict[str, Callable[[Path], Path]]] = {
    "clip": build_clip,
    "siglip": build_siglip,
    "siglip2": build_siglip2,
}


def build_all(root: Path) -> dict[str, Path]:
    """Every tiny caption model and scorer under root/<family>; their folders by family."""
    built = {}
    for family, build in {**CAPTIONERS, **SCORERS}.items():
        built[family] = build(Path(root) / family)
    return built
