from __future__ import annotations

from shared.core.messages import Entity
from shared.core.settings import Settings
from workers.captioning.text_cleanup import clean_caption

OPENINGS = Settings().caption_options().strip_openings


def test_stock_openings_and_extra_whitespace_go_and_entities_follow() -> None:
    text = "This image shows  a red   barn\nnext to a field."
    barn = text.index("a red   barn")
    entities = [Entity(phrase="a red barn", start=barn, end=barn + len("a red   barn"), boxes=[[0, 0, 1, 1]])]
    cleaned, moved = clean_caption(text, entities, openings=OPENINGS)
    assert cleaned == "A red barn next to a field."
    (entity,) = moved
    assert cleaned[entity.start : entity.end] == "A red barn"
    assert entity.boxes == [[0, 0, 1, 1]]


def test_an_opening_is_stripped_only_at_the_start_and_never_to_nothing() -> None:
    assert clean_caption("A dog. The image shows a dog.", [], openings=OPENINGS)[0] == (
        "A dog. The image shows a dog."
    )
    assert clean_caption("This image shows", [], openings=OPENINGS)[0] == "This image shows"


def test_a_sentence_cut_by_the_token_limit_is_trimmed_only_when_asked() -> None:
    text = "A cat sleeps on a sofa. Behind it a window with"
    assert clean_caption(text, [], trim_partial=True, truncated=True)[0] == "A cat sleeps on a sofa."
    assert clean_caption(text, [], trim_partial=False, truncated=True)[0] == text
    assert clean_caption(text, [], trim_partial=True, truncated=False)[0] == text
    # A single unfinished sentence is kept rather than leaving nothing.
    assert clean_caption("A cat on a", [], trim_partial=True, truncated=True)[0] == "A cat on a"


def test_an_entity_in_a_trimmed_tail_is_dropped() -> None:
    text = "A cat sleeps. A window with a"
    window = text.index("A window")
    entities = [Entity(phrase="A window", start=window, end=window + 8)]
    cleaned, moved = clean_caption(text, entities, trim_partial=True, truncated=True)
    assert cleaned == "A cat sleeps." and moved == []
