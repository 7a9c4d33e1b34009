"""What every captioner adapter offers the engine, and the prompt presets each family maps.

The contract (the shape the Kosmos-2 captioner has had from the start):

- ``preprocess(image)`` runs in Celery's pool threads, on the CPU, once per image, and
  returns whatever that family's forward needs (pixels, or a resized image when the
  processor must see the text and the image together).
- ``forward(items, prompt=..., **decoding)`` is the only call that touches the device. It
  gets one batch of preprocessed items that share one prompt, decodes greedily unless
  told otherwise, and returns only the newly generated token ids, on the CPU.
- ``caption_ids(items, prompt=..., **decoding)`` is what the engine calls: the new ids and
  the decoder that wrote them (Kosmos-2 picks its own static decoder where it applies; the
  others run forward, transformers' generate, through GenerateCaptioner).
- ``postprocess(new_ids, max_new_tokens=...)`` turns those ids into Captions (text,
  entities where the family grounds them, and whether the token limit cut them short).
- ``prompt_for(prompt)`` is the prompt in the family's own form: the one actually sent,
  which the record shows.

A job carries its prompt as text (the storage host resolves presets in Kosmos-2's form,
as it always has), so a family recognises a preset by that text and maps it to its own
form; any other text is the user's free text and is used as written.
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from shared.core.decoding import Decoder
from shared.core.prompts import PRESETS
from workers.captioning.families.kosmos2.captioner import Caption
from workers.captioning.generation import eos_ids_of, truncated_rows

# Kosmos-2's preset text -> the preset's name, to recognise a preset in a job's prompt.
_PRESET_BY_TEXT: dict[str, str] = {text: name for name, text in PRESETS.items()}
# Grounding is Kosmos-2's; every other family reads it as its detailed form.
_PRESET_FALLBACK: dict[str, str] = {"grounded-detailed": "detailed"}


def preset_name(prompt: str) -> str | None:
    """The preset this prompt is (by name or by its Kosmos-2 text), or None for free text."""
    stripped = prompt.strip()
    if stripped in PRESETS:
        return stripped
    return _PRESET_BY_TEXT.get(stripped)


def family_prompt(prompt: str, forms: dict[str, str]) -> str:
    """The family's own form of a preset (``forms`` maps detailed/brief), else the text."""
    name = preset_name(prompt)
    if name is None:
        return prompt
    name = name if name in forms else _PRESET_FALLBACK.get(name, name)
    return forms.get(name, prompt)


class CaptionAdapter(Protocol):
    """One caption model and its processor, loaded once per worker process."""

    source: str
    family: str  # the family's name as the README and the record give it ("kosmos-2", ...)

    def preprocess(self, image: Image.Image) -> Any: ...

    def forward(
        self,
        items: list[Any],
        *,
        prompt: str,
        max_new_tokens: int,
        min_new_tokens: int | None = None,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> Any: ...

    def caption_ids(
        self,
        items: list[Any],
        *,
        prompt: str,
        max_new_tokens: int,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> tuple[Any, Decoder]: ...

    def postprocess(self, new_ids: Any, *, max_new_tokens: int | None = None) -> list[Caption]: ...

    def prompt_for(self, prompt: str) -> str: ...


class GenerateCaptioner:
    """What the families that decode with transformers' generate share: the batch's ids come
    from forward (the family's own), and the text is each row decoded, without entities.
    Subclasses set processor and model and write forward."""

    processor: Any
    model: Any

    def forward(
        self,
        items: list[Any],
        *,
        prompt: str,
        max_new_tokens: int,
        min_new_tokens: int | None = None,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> Any:
        raise NotImplementedError

    def caption_ids(
        self,
        items: list[Any],
        *,
        prompt: str,
        max_new_tokens: int,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> tuple[Any, Decoder]:
        """New token ids of a batch, and the decoder that wrote them: always generate."""
        ids = self.forward(
            items,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return ids, Decoder.GENERATE

    def postprocess(self, new_ids: Any, *, max_new_tokens: int | None = None) -> list[Caption]:
        """The decoded text of each row, stripped; these families give no grounded entities."""
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        cut = truncated_rows(new_ids, eos_ids=eos_ids_of(self.model), max_new_tokens=max_new_tokens)
        return [
            Caption(text=text.strip(), entities=[], truncated=t) for text, t in zip(texts, cut, strict=True)
        ]
