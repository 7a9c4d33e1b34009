from __future__ import annotations

from shared.core.messages import Entity
from shared.core.settings import Settings
from workers.captioning.text_cleanup import clean_caption

OPENINGS = Settings(strip_openings="training").caption_options().strip_openings


def test_by_default_nothing_is_cleaned_so_the_caption_is_the_original_scripts() -> None:
    options = Settings().caption_options()
    assert options.strip_openings == () and not options.collapse_whitespace and not options.trim_partial
    # The original script's own README example, and whitespace it would have kept.
    for text in ("The image features a man standing on a hill.", "A dog  runs.\nThe image shows it"):
        entities = [Entity(phrase="a man", start=17, end=22)]
        assert clean_caption(
            text,
            entities,
            openings=options.strip_openings,
            collapse_whitespace=options.collapse_whitespace,
            trim_partial=options.trim_partial,
            truncated=True,
        ) == (text, entities)


def test_the_training_preset_strips_stock_openings_at_a_word_boundary_only() -> None:
    assert clean_caption("The image features a man standing on a hill.", [], openings=OPENINGS)[0] == (
        "A man standing on a hill."
    )
    # "The image is" must not take the "is" of "isolates".
    assert clean_caption("The image isolates a single tree", [], openings=OPENINGS)[0] == (
        "The image isolates a single tree"
    )
    assert clean_caption("The image is a single tree", [], openings=OPENINGS)[0] == "A single tree"
    assert clean_caption("In this image, a tree", [], openings=OPENINGS)[0] == "A tree"
    # Free text works as well as the preset, and the flag's words may be apart by any space.
    custom = Settings(strip_openings="Here we see|A view of").caption_options().strip_openings
    assert custom == ("Here we see", "A view of")
    assert clean_caption("Here  we\nsee a tree", [], openings=custom)[0] == "A tree"


def test_stock_openings_and_extra_whitespace_go_and_entities_follow() -> None:
    text = "This image shows  a red   barn\nnext to a field."
    barn = text.index("a red   barn")
    entities = [Entity(phrase="a red barn", start=barn, end=barn + len("a red   barn"), boxes=[[0, 0, 1, 1]])]
    cleaned, moved = clean_caption(text, entities, openings=OPENINGS, collapse_whitespace=True)
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
