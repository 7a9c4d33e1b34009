"""Every tiny caption and scorer model by family name: what the family tests parametrize over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from workers.tiny.blip2 import build_blip2
from workers.tiny.clip import build_clip
from workers.tiny.florence2 import build_florence2
from workers.tiny.idefics3 import build_idefics3, build_smolvlm
from workers.tiny.kosmos2 import build_kosmos2
from workers.tiny.llava import build_llava, build_llava_onevision
from workers.tiny.qwen_vl import build_qwen2_5_vl, build_qwen2_vl, build_qwen3_vl
from workers.tiny.siglip import build_siglip, build_siglip2

# Keyed by the family name the caption adapter reports (the record's caption_family).
CAPTIONERS: Final[dict[str, Callable[[Path], Path]]] = {
    "kosmos-2": build_kosmos2,
    "florence-2": build_florence2,
    "qwen2-vl": build_qwen2_vl,
    "qwen2.5-vl": build_qwen2_5_vl,
    "qwen3-vl": build_qwen3_vl,
    "llava": build_llava,
    "llava-onevision": build_llava_onevision,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
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
