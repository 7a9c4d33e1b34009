"""Caption cleanup: whitespace, stock openings, a sentence cut short by the token limit.

Every step is opt-in: with none asked for, the caption is returned as it came, which is what
the original script wrote. Every step only drops characters (or changes one character's
case), so entity spans are carried over by counting the characters kept before them.
"""

from __future__ import annotations

import re

from shared.core.messages import Entity

_SENTENCE_END = ".!?"


def clean_caption(
    text: str,
    entities: list[Entity],
    *,
    openings: tuple[str, ...] = (),
    collapse_whitespace: bool = False,
    trim_partial: bool = False,
    truncated: bool = False,
) -> tuple[str, list[Entity]]:
    if not (openings or collapse_whitespace or (trim_partial and truncated)):
        return text, entities
    keep = [True] * len(text)
    chars = list(text)
    if collapse_whitespace:
        _collapse_whitespace(chars, keep)
    _strip_opening(chars, keep, openings)
    if trim_partial and truncated:
        _trim_partial_sentence(chars, keep)
    _strip_edges(chars, keep)
    new_text = "".join(c for c, k in zip(chars, keep, strict=True) if k)
    kept_before = [0] * (len(text) + 1)
    for i, k in enumerate(keep):
        kept_before[i + 1] = kept_before[i] + (1 if k else 0)
    mapped = []
    for entity in entities:
        if not any(keep[entity.start : entity.end]):
            continue  # the phrase was cut away
        start, end = kept_before[entity.start], kept_before[entity.end]
        phrase = new_text[start:end]
        if phrase.strip():
            mapped.append(
                Entity(
                    phrase=phrase.strip(),
                    start=start + (len(phrase) - len(phrase.lstrip())),
                    end=end - (len(phrase) - len(phrase.rstrip())),
                    boxes=entity.boxes,
                    boxes_px=entity.boxes_px,
                )
            )
    return new_text, mapped


def _kept(chars: list[str], keep: list[bool]) -> list[int]:
    return [i for i, k in enumerate(keep) if k]


def _collapse_whitespace(chars: list[str], keep: list[bool]) -> None:
    previous_space = True  # also drops leading whitespace
    for i, c in enumerate(chars):
        if c.isspace():
            chars[i] = " "
            if previous_space:
                keep[i] = False
            previous_space = True
        else:
            previous_space = False


def _strip_opening(chars: list[str], keep: list[bool], openings: tuple[str, ...]) -> None:
    indices = _kept(chars, keep)
    current = "".join(chars[i] for i in indices)
    for opening in sorted(openings, key=len, reverse=True):
        match = re.match(_opening_pattern(opening), current, flags=re.IGNORECASE)
        if match and match.end() < len(current):
            for i in indices[: match.end()]:
                keep[i] = False
            first = indices[match.end()]
            chars[first] = chars[first].upper()
            return


def _opening_pattern(opening: str) -> str:
    """The opening at the start, its words apart by any whitespace, ending at a word boundary
    ("The image is" must not take the "is" of "isolates"), with the punctuation after it."""
    words = r"\s+".join(re.escape(word) for word in opening.split())
    boundary = r"(?!\w)" if opening[-1:].isalnum() else ""
    return rf"\s*{words}{boundary}[\s,:;]*"


def _trim_partial_sentence(chars: list[str], keep: list[bool]) -> None:
    indices = _kept(chars, keep)
    current = "".join(chars[i] for i in indices).rstrip()
    if not current or current[-1] in _SENTENCE_END:
        return
    last_end = max(current.rfind(mark) for mark in _SENTENCE_END)
    if last_end <= 0:
        return  # one unfinished sentence: keeping it beats an empty caption
    for i in indices[last_end + 1 :]:
        keep[i] = False


def _strip_edges(chars: list[str], keep: list[bool]) -> None:
    indices = _kept(chars, keep)
    for i in indices:
        if not chars[i].isspace():
            break
        keep[i] = False
    for i in reversed(indices):
        if not chars[i].isspace():
            break
        keep[i] = False
