"""A processor saved as its parts, the way hub checkpoints of the video-capable families are.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM and LLaVA-OneVision processors hold a video
processor, which needs torchvision, and transformers will not make one of these processors
without it. Their hub folders hold the parts side by side: ``preprocessor_config.json`` (the
image processor), the tokenizer's files and chat template, and ``processor_config.json``
naming the processor class and its own settings. A tiny checkpoint is written the same way
from the real parts, so production loads it as it loads a hub folder, and the factory needs
nothing from the code under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast


@dataclass(frozen=True)
class ProcessorParts:
    processor_class: str
    image_processor: Any
    tokenizer: PreTrainedTokenizerFast
    settings: dict[str, Any] = field(default_factory=dict)

    def save_pretrained(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        self.image_processor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        config = {"processor_class": self.processor_class, **self.settings}
        (out_dir / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
