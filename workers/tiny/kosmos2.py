"""A random Kosmos-2 checkpoint with the real classes and a trained Unigram tokenizer.

See DESIGN.md, "No model hub here", for why the output head is untied and partly zeroed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    XLMRobertaTokenizer,
)

from workers.tiny.common import SEED, SENTENCES, image_processor, preset_of
from workers.tiny.kosmos2_grammar import teach_grammar

# Kosmos2Processor always inserts 64 image placeholders (its class default
# `num_image_tokens`; it cannot be saved in the processor config), so every
# preset must keep `latent_query_num` at 64 or the image embeddings would not
# fit their slots.
_KOSMOS2_IMAGE_TOKENS: Final = 64

# Real microsoft/kosmos-2-patch14-224 vocabulary size; the "full" preset pads
# its tokenizer to exactly this, so embedding and output head have the real shapes.
_KOSMOS2_FULL_VOCAB: Final = 65037


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
    # The "grounded" caption mode's (trigger_share, eos_force); see kosmos2_grammar.py.
    grammar: tuple[float, float] = (0.2, 1.0)


# A few MB. Wide enough (64) that images steer greedy decoding apart;
# narrower configs tend to write the same caption for every image.
_TINY: Final = Kosmos2Preset(
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
)

KOSMOS2_PRESETS: Final[dict[str, Kosmos2Preset]] = {
    "tiny": _TINY,
    # The tiny model behind the real processor size (224 px, patch 14, as the hub
    # checkpoint): a near-null model whose preprocessing costs what the real one's does.
    # The host-path benchmark measures decoding and resizing real-size photos with it.
    "tiny224": Kosmos2Preset(
        image_size=224,
        patch_size=14,
        vision_hidden=32,
        vision_layers=1,
        vision_heads=2,
        vision_intermediate=64,
        text_embed_dim=64,
        text_layers=2,
        text_heads=2,
        text_ffn_dim=128,
    ),
    # A narrow decoder with many layers: bound by per-step overhead (one dispatch per small
    # op), the way a real decoder is bound by kernel launches on a GPU, so it stands in for
    # a GPU when the decode loop is measured on a CPU.
    "deep": replace(_TINY, text_layers=16, grammar=(0.35, 0.9)),
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
    trainer_tok.train_from_iterator(SENTENCES, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]["vocab"]
    vocab: list[tuple[str, float]] = [(piece, float(score)) for piece, score in trained]
    if [piece for piece, _ in vocab[: len(specials)]] != specials:
        raise RuntimeError(f"unexpected special-token order in trained vocab: {vocab[:5]}")
    # The trainer returns the same pieces on every run, but pieces of equal score in any
    # order and scores that differ in their last digits; the model's rows are indexed by id,
    # so that would make each build a different model. Rounded scores and pieces in
    # alphabetical order give every build the same ids.
    learned = sorted((piece, round(score, 3)) for piece, score in vocab[len(specials) :])
    vocab = vocab[: len(specials)] + learned
    # A few dozen sentences leave Unigram mostly word fragments. Every corpus
    # word gets a whole-word piece, scored like the commonest piece, so text
    # tokenizes into words and a random model's greedy output reads as words.
    known = {piece for piece, _ in vocab}
    word_score = max(score for _, score in vocab[len(specials) :])
    words = dict.fromkeys(re.findall(r"[a-z]+", " ".join(SENTENCES).lower()))
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
    sizes = preset_of(KOSMOS2_PRESETS, preset)
    tokenizer = _kosmos2_tokenizer(sizes.vocab_size)
    processor = Kosmos2Processor(image_processor(sizes.image_size, square=True), tokenizer)
    if sizes.vocab_size is not None and len(processor.tokenizer) != sizes.vocab_size:
        raise RuntimeError(f"tokenizer has {len(processor.tokenizer)} tokens, expected {sizes.vocab_size}")
    return processor


def kosmos2_config(*, preset: str = "tiny", vocab_size: int) -> Kosmos2Config:
    """Kosmos2Config for ``preset`` with the given (tokenizer-derived) vocabulary size."""
    sizes = preset_of(KOSMOS2_PRESETS, preset)
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


# What greedy decoding of a built model writes: "endless" never stops and never grounds
# (every caption runs to max_new_tokens); "grounded" follows Kosmos-2's grounding grammar and
# stops after lengths that vary from image to image (kosmos2_grammar.py).
CAPTION_MODES: Final = ("endless", "grounded")


def build_kosmos2(
    out_dir: Path,
    *,
    preset: str = "tiny",
    dtype: torch.dtype = torch.float32,
    captions: str = "endless",
) -> Path:
    """Build a random Kosmos-2 checkpoint (processor + model) into ``out_dir``.

    Load it with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``AutoModelForImageTextToText.from_pretrained(out_dir)``. ``dtype`` is the
    dtype the weights are saved in (float16 halves the "full" checkpoint to
    about 3.6 GB). ``captions`` is one of CAPTION_MODES.
    """
    if captions not in CAPTION_MODES:
        raise ValueError(f"captions must be one of {CAPTION_MODES}, not {captions!r}")
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
    if captions == "grounded":
        sizes = preset_of(KOSMOS2_PRESETS, preset)
        trigger_share, eos_force = sizes.grammar
        teach_grammar(model, processor, seed=SEED, trigger_share=trigger_share, eos_force=eos_force)
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
