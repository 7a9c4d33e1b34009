"""A random CLIP checkpoint with the real classes and a trained byte-level BPE tokenizer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from workers.tiny.common import SEED, SENTENCES, image_processor, preset_of

_CLIP_MAX_TOKENS: Final = 77


@dataclass(frozen=True, slots=True)
class ClipPreset:
    """Sizes of one CLIP preset; the field names follow CLIPConfig."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    projection_dim: int
    # None: the model vocabulary is exactly the trained tokenizer.
    vocab_size: int | None = None


CLIP_PRESETS: Final[dict[str, ClipPreset]] = {
    "tiny": ClipPreset(
        image_size=32,
        patch_size=8,
        vision_hidden=32,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=64,
        text_hidden=32,
        text_layers=2,
        text_heads=2,
        text_intermediate=64,
        projection_dim=16,
    ),
    # Tiny, behind the real processor size (224 px): preprocessing costs what CLIP-L's does.
    "tiny224": ClipPreset(
        image_size=224,
        patch_size=32,
        vision_hidden=32,
        vision_layers=1,
        vision_heads=2,
        vision_intermediate=64,
        text_hidden=32,
        text_layers=2,
        text_heads=2,
        text_intermediate=64,
        projection_dim=16,
    ),
    # openai/clip-vit-large-patch14 sizes.
    "full": ClipPreset(
        image_size=224,
        patch_size=14,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate=4096,
        text_hidden=768,
        text_layers=12,
        text_heads=12,
        text_intermediate=3072,
        projection_dim=768,
        vocab_size=49408,
    ),
}


_CLIP_BOS: Final = "<|startoftext|>"
_CLIP_EOS: Final = "<|endoftext|>"


def _clip_tokenizer(vocab_size: int | None) -> CLIPTokenizer:
    """Byte-level BPE with ``</w>`` word ends, laid out like CLIP's vocabulary.

    As in the real vocabulary the 256 byte symbols come first, then the same
    symbols with ``</w>``, then merges, with BOS and EOS the two last ids:
    every byte sequence can be encoded (no unk), and EOS is the largest id,
    which CLIP's text pooling relies on.
    """
    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    # Same normalizer and pre-tokenizer CLIPTokenizer installs.
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(SENTENCES, trainer)
    trained = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    ordered = [*alphabet, *(f"{c}</w>" for c in alphabet)]
    seen = set(ordered)
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        if token not in seen:
            ordered.append(token)
            seen.add(token)
    if vocab_size is not None:
        # No merge produces these and the pre-tokenizer splits "<|" off, so
        # text never maps to them; they only give the embedding its real shape.
        missing = vocab_size - 2 - len(ordered)
        if missing < 0:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the trained vocabulary")
        ordered += [f"<|filler{i:05d}|>" for i in range(missing)]
    ordered += [_CLIP_BOS, _CLIP_EOS]
    vocab = {token: i for i, token in enumerate(ordered)}
    return CLIPTokenizer(
        vocab=vocab,
        # The annotation says list[str], but the tokenizers BPE it feeds only
        # accepts (left, right) tuples.
        merges=merges,  # type: ignore[arg-type]
        bos_token=_CLIP_BOS,
        eos_token=_CLIP_EOS,
        unk_token=_CLIP_EOS,
        pad_token=_CLIP_EOS,
        model_max_length=_CLIP_MAX_TOKENS,
    )


def clip_processor(*, preset: str = "tiny") -> CLIPProcessor:
    """The processor ``build_clip`` saves, without building a model."""
    sizes = preset_of(CLIP_PRESETS, preset)
    return CLIPProcessor(
        image_processor=image_processor(sizes.image_size), tokenizer=_clip_tokenizer(sizes.vocab_size)
    )


def clip_config(*, preset: str = "tiny", vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPConfig:
    """CLIPConfig for ``preset`` with token ids taken from the tokenizer."""
    sizes = preset_of(CLIP_PRESETS, preset)
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": sizes.text_hidden,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads,
        "intermediate_size": sizes.text_intermediate,
        "max_position_embeddings": _CLIP_MAX_TOKENS,
        "projection_dim": sizes.projection_dim,
        "bos_token_id": bos_token_id,
        # Text pooling takes the hidden state at the first EOS, found by this id.
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id,
    }
    vision_config = {
        "hidden_size": sizes.vision_hidden,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "intermediate_size": sizes.vision_intermediate,
        "image_size": sizes.image_size,
        "patch_size": sizes.patch_size,
        "projection_dim": sizes.projection_dim,
    }
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=sizes.projection_dim,
        # Trained CLIP's logit scale sits at its clamp, 100, and kcap's score
        # is logits_per_image = 100 x cosine; the default init (1/0.07) would
        # make scores from these models incomparable with the real threshold.
        logit_scale_init_value=math.log(100.0),
    )


def build_clip(out_dir: Path, *, preset: str = "tiny", dtype: torch.dtype = torch.float32) -> Path:
    """Build a random CLIP checkpoint (processor + model) into ``out_dir``.

    Load it with ``CLIPProcessor.from_pretrained(out_dir)`` (or AutoProcessor)
    and ``CLIPModel.from_pretrained(out_dir)``.
    """
    out_dir = Path(out_dir)
    processor = clip_processor(preset=preset)
    tokenizer = processor.tokenizer
    config = clip_config(
        preset=preset,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(SEED)
    model = CLIPModel(config).eval().to(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
