"""What every tiny model shares: the seed, the training sentences of its tokenizers, presets.

Nothing here touches a model hub. Every checkpoint is built from the real transformers
classes, with tokenizers trained on a few dozen sentences, and written with
``save_pretrained``: production code loads it through the very ``from_pretrained`` path it
uses for hub models, so a test exercises the real processor, the real ``generate`` and the
real post-processing.
"""

from __future__ import annotations

from typing import Final, TypeVar

from transformers import CLIPImageProcessorPil

_P = TypeVar("_P")

# Every build seeds torch with this, so two builds of a preset are identical
# and a failing test can be replayed bit for bit.
SEED: Final = 1234

# Enough distinct words that a trained vocabulary holds a few hundred whole
# words, so greedy decoding of a random model writes words rather than letters.
SENTENCES: Final = (
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


def preset_of(table: dict[str, _P], preset: str) -> _P:
    try:
        return table[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(table)}") from None


def image_processor(size: int, *, square: bool = False) -> CLIPImageProcessorPil:
    # The PIL backend needs no torchvision; the torchvision-backed
    # CLIPImageProcessor would log a fallback warning when it is missing.
    # Both save as "CLIPImageProcessor", so loading picks whichever backend
    # the loading machine has. square: the hub Kosmos-2 checkpoint's rule
    # (use_square_size: the photo squashed to size x size), where CLIP's
    # scales the short side and crops the middle.
    return CLIPImageProcessorPil(
        size={"height": size, "width": size} if square else {"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )
