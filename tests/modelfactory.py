"""Small random Kosmos-2 and CLIP checkpoints built offline for tests and benchmarks.

Nothing here touches a model hub. Every checkpoint is built from the real
transformers classes, with tokenizers trained on a few dozen sentences, and
written with ``save_pretrained``: production code loads it through the very
``from_pretrained`` path it uses for the hub models, so a test exercises the
real processor, the real ``generate`` and the real post-processing.

See DESIGN.md, "No model hub here", for why the Kosmos-2 output head is
untied and partly zeroed.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import torch
from PIL import Image, ImageDraw
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    GenerationConfig,
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    XLMRobertaTokenizer,
)

__all__ = [
    "CLIP_PRESETS",
    "KOSMOS2_PRESETS",
    "SEED",
    "ClipPreset",
    "Kosmos2Preset",
    "build_clip",
    "build_kosmos2",
    "clip_config",
    "clip_processor",
    "kosmos2_config",
    "kosmos2_processor",
    "tiny_images",
]

_P = TypeVar("_P", "Kosmos2Preset", "ClipPreset")

# Every build seeds torch with this, so two builds of a preset are identical
# and a failing test can be replayed bit for bit.
SEED: Final = 1234

# Kosmos2Processor always inserts 64 image placeholders (its class default
# `num_image_tokens`; it cannot be saved in the processor config), so every
# preset must keep `latent_query_num` at 64 or the image embeddings would not
# fit their slots.
_KOSMOS2_IMAGE_TOKENS: Final = 64

# Real microsoft/kosmos-2-patch14-224 vocabulary size; the "full" preset pads
# its tokenizer to exactly this, so embedding and output head have the real shapes.
_KOSMOS2_FULL_VOCAB: Final = 65037

_CLIP_MAX_TOKENS: Final = 77

# Enough distinct words that a trained vocabulary holds a few hundred whole
# words, so greedy decoding of a random model writes words rather than letters.
_SENTENCES: Final = (
    # The production prompt, so its words tokenize as whole pieces.
    "Give a detailed description of this image, including any subject matter, "
    "style of art if any, and the context:",
    "a photo of a red circle on a blue background",
    "a small brown dog runs across the green field in the morning",
    "an oil painting of a city at night with bright yellow lights",
    "two grey cats sleeping on a wooden kitchen table",
    "a watercolor sketch of mountains under a cloudy sky",
    "the old man reads a newspaper on a park bench",
    "a bowl of fresh fruit with apples, oranges and bananas",
    "children playing football on a sandy beach near the ocean",
    "a black and white portrait of a woman wearing a hat",
    "a modern building with glass windows reflecting the sunset",
    "a bicycle leaning against a brick wall in a narrow street",
    "an abstract composition of triangles, squares and purple lines",
    "a tall lighthouse standing on rocks during a storm",
    "a cup of coffee next to an open book and a pair of glasses",
    "a herd of horses grazing in a meadow with flowers",
    "a digital illustration of a robot holding a glowing lantern",
    "snow covered pine trees in a quiet forest at dawn",
    "a crowded market with vendors selling vegetables and spices",
    "a child drawing with colorful crayons on white paper",
    "a red sports car parked in front of a luxury hotel",
    "a bird with blue feathers perched on a thin branch",
    "a medieval castle surrounded by a river and green hills",
    "a close up of a flower with drops of water on its petals",
    "a pencil drawing of a cat sitting by the window",
    "an airplane flying above the clouds in a clear sky",
    "a plate of pasta with tomato sauce and fresh basil",
    "a group of friends laughing around a campfire at night",
    "a cartoon style picture of a happy dragon eating cake",
    "the skyline of a large city seen from across the river",
    "a vintage poster with bold letters and a smiling sailor",
    "a quiet library with shelves full of old books",
    "a fisherman pulling his boat onto the shore at sunrise",
    "a statue of a horse in the middle of a stone square",
    "rain falling on a busy street full of umbrellas",
    "a baby elephant walking behind its mother in the savanna",
    "a pixel art scene of a tiny house and a garden",
    "a surreal landscape with floating islands and waterfalls",
    "a chef preparing sushi in a small restaurant kitchen",
    "a golden retriever puppy playing with a yellow ball",
    "a train crossing a bridge over a deep valley",
    "a minimalist photograph of a single chair in an empty room",
)


@dataclass(frozen=True, slots=True)
class Kosmos2Preset:
    """Sizes of one Kosmos-2 preset; the field names follow Kosmos2Config."""

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    text_embed_dim: int
    text_layers: int
    text_heads: int
    text_ffn_dim: int
    # With the stock 0.02 a narrow random decoder barely reacts to its image
    # embeddings, so every image gets the same caption; 0.1 makes captions
    # differ from image to image. "full" keeps the real 0.02, which keeps
    # activations of its 24 layers well inside float16 range.
    text_init_std: float = 0.1
    # None: the model vocabulary is exactly the trained tokenizer plus the
    # processor's tag and patch-index tokens.
    vocab_size: int | None = None


KOSMOS2_PRESETS: Final[dict[str, Kosmos2Preset]] = {
    # A few MB. Wide enough (64) that images steer greedy decoding apart;
    # narrower configs tend to write the same caption for every image.
    "tiny": Kosmos2Preset(
        image_size=32,
        patch_size=8,
        vision_hidden=32,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=64,
        text_embed_dim=64,
        text_layers=2,
        text_heads=2,
        text_ffn_dim=128,
    ),
    # CPU benchmark workload: real 224 px / patch 14 input (257 vision tokens), so
    # preprocessing and the vision tower do realistic work per image. Sized so the model
    # dominates, as the benchmark asks: on 2 quiet cores about 110 ms per image at batch 1
    # and 50 ms per image at batch 16. A wider decoder (512) writes only a handful of
    # distinct captions for 200 images, which would blunt the benchmark's caption checks.
    "small": Kosmos2Preset(
        image_size=224,
        patch_size=14,
        vision_hidden=384,
        vision_layers=4,
        vision_heads=6,
        vision_intermediate=1536,
        text_embed_dim=256,
        text_layers=4,
        text_heads=4,
        text_ffn_dim=1024,
    ),
    # microsoft/kosmos-2-patch14-224 sizes (ViT-L/14 vision tower, 24-layer
    # 2048-wide decoder). Random weights; the honest workload for speed and
    # memory figures on a GPU.
    "full": Kosmos2Preset(
        image_size=224,
        patch_size=14,
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate=4096,
        text_embed_dim=2048,
        text_layers=24,
        text_heads=32,
        text_ffn_dim=8192,
        text_init_std=0.02,
        vocab_size=_KOSMOS2_FULL_VOCAB,
    ),
}


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


def _preset(table: dict[str, _P], preset: str) -> _P:
    try:
        return table[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(table)}") from None


def _image_processor(size: int) -> CLIPImageProcessorPil:
    # The PIL backend needs no torchvision; the torchvision-backed
    # CLIPImageProcessor would log a fallback warning when it is missing.
    # Both save as "CLIPImageProcessor", so loading picks whichever backend
    # the loading machine has.
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )


# --------------------------------------------------------------------------
# Kosmos-2


def _kosmos2_tokenizer(vocab_size: int | None) -> XLMRobertaTokenizer:
    """Unigram tokenizer shaped like Kosmos-2's (XLM-R sentencepiece) one.

    ``vocab_size`` is the size the *processor* tokenizer must reach once
    Kosmos2Processor has added its tag and patch-index tokens; the Unigram
    vocabulary is padded with filler words to get there.
    """
    # XLMRobertaTokenizer hard-codes unk_id=3, so the special tokens must sit
    # at ids 0..4 in exactly this order (which is also fairseq's order, and
    # Kosmos2TextConfig's bos=0, pad=1, eos=2 defaults).
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer_tok = Tokenizer(models.Unigram())
    # Same pre-tokenization XLMRobertaTokenizer installs, so the trained
    # pieces are the ones it will actually look up.
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=400,
        special_tokens=specials,
        unk_token="<unk>",
        show_progress=False,
    )
    trainer_tok.train_from_iterator(_SENTENCES, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]["vocab"]
    vocab: list[tuple[str, float]] = [(piece, float(score)) for piece, score in trained]
    if [piece for piece, _ in vocab[: len(specials)]] != specials:
        raise RuntimeError(f"unexpected special-token order in trained vocab: {vocab[:5]}")
    # A few dozen sentences leave Unigram mostly word fragments. Every corpus
    # word gets a whole-word piece, scored like the commonest piece, so text
    # tokenizes into words and a random model's greedy output reads as words.
    known = {piece for piece, _ in vocab}
    word_score = max(score for _, score in vocab[len(specials) :])
    words = dict.fromkeys(re.findall(r"[a-z]+", " ".join(_SENTENCES).lower()))
    vocab += [(f"▁{word}", word_score) for word in words if f"▁{word}" not in known]

    if vocab_size is not None:
        # The processor adds 11 tag tokens and 1024 patch-index tokens.
        added = len(_KOSMOS2_TAG_TOKENS) + _KOSMOS2_PATCH_TOKENS
        missing = vocab_size - added - len(vocab)
        if missing < 0:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the trained vocabulary")
        # Lowest scores: Unigram never prefers them over the trained pieces,
        # so tokenization of real text is unchanged; they only widen the model.
        floor = min(score for _, score in vocab) - 10.0
        vocab += [(f"▁filler{i:05d}", floor) for i in range(missing)]

    return XLMRobertaTokenizer(vocab=vocab)


_KOSMOS2_TAG_TOKENS: Final = (
    "</doc>",
    "<image>",
    "</image>",
    "</chunk>",
    "</line>",
    "<phrase>",
    "</phrase>",
    "<object>",
    "</object>",
    "</delimiter_of_multi_objects/>",
    "<grounding>",
)
_KOSMOS2_PATCH_TOKENS: Final = 1024
# XLM-R (fairseq) ids, which XLMRobertaTokenizer and Kosmos2TextConfig assume.
_KOSMOS2_BOS: Final = 0
_KOSMOS2_PAD: Final = 1
_KOSMOS2_EOS: Final = 2


def kosmos2_processor(*, preset: str = "tiny") -> Kosmos2Processor:
    """The processor ``build_kosmos2`` saves, without building a model."""
    sizes = _preset(KOSMOS2_PRESETS, preset)
    tokenizer = _kosmos2_tokenizer(sizes.vocab_size)
    processor = Kosmos2Processor(_image_processor(sizes.image_size), tokenizer)
    if sizes.vocab_size is not None and len(processor.tokenizer) != sizes.vocab_size:
        raise RuntimeError(f"tokenizer has {len(processor.tokenizer)} tokens, expected {sizes.vocab_size}")
    return processor


def kosmos2_config(*, preset: str = "tiny", vocab_size: int) -> Kosmos2Config:
    """Kosmos2Config for ``preset`` with the given (tokenizer-derived) vocabulary size."""
    sizes = _preset(KOSMOS2_PRESETS, preset)
    text_config = {
        "vocab_size": vocab_size,
        "embed_dim": sizes.text_embed_dim,
        "layers": sizes.text_layers,
        "attention_heads": sizes.text_heads,
        "ffn_dim": sizes.text_ffn_dim,
        "init_std": sizes.text_init_std,
        # Tying makes a random model echo its input: the logit of the token it
        # was just fed is the embedding's squared norm, which dominates, so
        # greedy decoding repeats the last prompt token. Each sub-config is
        # read separately when weights are tied, so both levels are untied.
        "tie_word_embeddings": False,
        "bos_token_id": _KOSMOS2_BOS,
        "pad_token_id": _KOSMOS2_PAD,
        "eos_token_id": _KOSMOS2_EOS,
    }
    vision_config = {
        "hidden_size": sizes.vision_hidden,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "intermediate_size": sizes.vision_intermediate,
        "image_size": sizes.image_size,
        "patch_size": sizes.patch_size,
    }
    return Kosmos2Config(
        text_config=text_config,
        vision_config=vision_config,
        latent_query_num=_KOSMOS2_IMAGE_TOKENS,
        tie_word_embeddings=False,
    )


def _kosmos2_muted_ids(processor: Kosmos2Processor) -> list[int]:
    """Token ids the random model must never generate.

    Patch-index and tag tokens are dropped by ``post_process_generation`` and
    special tokens by ``skip_special_tokens``: a caption made of them decodes
    to "". EOS is muted too, so a random model never stops early by chance:
    every caption is non-empty and runs to ``max_new_tokens``, which makes
    timings the worst case and the batch/single comparison exact. A test that
    wants early stops can pass ``eos_token_id=<some word id>`` to generate.
    Of the remaining pieces only whole words ("▁dog") stay: a bare "▁" strips
    to "", and word fragments glue into unreadable runs ("ndsndsnds").
    """
    tokenizer = processor.tokenizer
    return sorted(
        token_id
        for piece, token_id in tokenizer.get_vocab().items()
        if not (piece.startswith("▁") and piece[1:].isalnum())
    )


def build_kosmos2(out_dir: Path, *, preset: str = "tiny", dtype: torch.dtype = torch.float32) -> Path:
    """Build a random Kosmos-2 checkpoint (processor + model) into ``out_dir``.

    Load it with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``AutoModelForImageTextToText.from_pretrained(out_dir)``. ``dtype`` is the
    dtype the weights are saved in (float16 halves the "full" checkpoint to
    about 3.6 GB).
    """
    out_dir = Path(out_dir)
    processor = kosmos2_processor(preset=preset)
    config = kosmos2_config(preset=preset, vocab_size=len(processor.tokenizer))

    torch.manual_seed(SEED)
    model = Kosmos2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Zero logits for the muted ids; the word logits of a random model are
        # spread around 0, so with hundreds of words the best one is positive
        # and a muted id never wins.
        model.get_output_embeddings().weight[_kosmos2_muted_ids(processor)] = 0.0
    # Greedy, like the original script; the token ids are those of the
    # XLM-R layout the tokenizer is forced into.
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=_KOSMOS2_BOS,
        eos_token_id=_KOSMOS2_EOS,
        pad_token_id=_KOSMOS2_PAD,
        use_cache=True,
    )
    model.to(dtype)

    out_dir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------
# CLIP

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
    backend.train_from_iterator(_SENTENCES, trainer)
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
    sizes = _preset(CLIP_PRESETS, preset)
    return CLIPProcessor(
        image_processor=_image_processor(sizes.image_size), tokenizer=_clip_tokenizer(sizes.vocab_size)
    )


def clip_config(*, preset: str = "tiny", vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPConfig:
    """CLIPConfig for ``preset`` with token ids taken from the tokenizer."""
    sizes = _preset(CLIP_PRESETS, preset)
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


# --------------------------------------------------------------------------
# Images


def tiny_images(n: int, *, seed: int = 0, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """``n`` visually distinct RGB images, the same for the same arguments.

    Each has its own background colour and a few random shapes, so even a
    32 px centre crop differs from image to image.
    """
    rng = random.Random(seed)
    width, height = size
    images: list[Image.Image] = []
    for _ in range(n):
        background = tuple(rng.randrange(256) for _ in range(3))
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 5)):
            x0, x1 = sorted(rng.randrange(width) for _ in range(2))
            y0, y1 = sorted(rng.randrange(height) for _ in range(2))
            box = (x0, y0, x1 + 1, y1 + 1)
            fill = tuple(rng.randrange(256) for _ in range(3))
            if rng.random() < 0.5:
                draw.rectangle(box, fill=fill)
            else:
                draw.ellipse(box, fill=fill)
        images.append(image)
    return images


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.modelfactory DIR`: tiny models for the README quickstart."""
    import argparse

    parser = argparse.ArgumentParser(description="Build random Kosmos-2 and CLIP checkpoints offline.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "full"])
    args = parser.parse_args(argv)
    kosmos = build_kosmos2(args.out_dir / "kosmos2", preset=args.preset)
    clip = build_clip(args.out_dir / "clip", preset=args.preset if args.preset != "small" else "tiny")
    print(f"--caption-model {kosmos} --clip-model {clip}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
