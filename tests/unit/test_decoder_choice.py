"""--decoder auto picks kcap's static decoder only where it writes what generate writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText, CLIPModel

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.core.decoding import Decoder
from shared.core.errors import ConfigError
from shared.core.settings import Settings
from workers.captioning.families.kosmos2.decoder_choice import choose_decoder, plain_generation_issues


@pytest.fixture(scope="module")
def kosmos(tiny_models: tuple[Path, Path]) -> object:
    return AutoModelForImageTextToText.from_pretrained(tiny_models[0]).eval()


def test_greedy_kosmos2_gets_the_static_decoder(kosmos: object) -> None:
    assert plain_generation_issues(kosmos) == []
    assert choose_decoder(kosmos, "auto") is Decoder.KCAP_STATIC


@pytest.mark.parametrize(
    "options",
    [{"num_beams": 3}, {"repetition_penalty": 1.1}, {"no_repeat_ngram_size": 2}, {"min_new_tokens": 4}],
)
def test_beams_and_repetition_controls_keep_generate(kosmos: object, options: dict[str, float]) -> None:
    assert choose_decoder(kosmos, "auto", **options) is Decoder.GENERATE  # type: ignore[arg-type]


def test_a_generation_config_with_its_own_processor_keeps_generate(kosmos: object) -> None:
    config = kosmos.generation_config  # type: ignore[attr-defined]
    saved = config.no_repeat_ngram_size
    config.no_repeat_ngram_size = 3
    try:
        assert plain_generation_issues(kosmos) == ["no_repeat_ngram_size=3"]
        assert choose_decoder(kosmos, "auto") is Decoder.GENERATE
    finally:
        config.no_repeat_ngram_size = saved


def test_decoder_generate_forces_generate_and_other_models_keep_it(
    kosmos: object, tiny_models: tuple[Path, Path]
) -> None:
    assert choose_decoder(kosmos, "generate") is Decoder.GENERATE
    assert choose_decoder(CLIPModel.from_pretrained(tiny_models[1]), "auto") is Decoder.GENERATE


def test_the_setting_comes_from_the_flag_and_the_environment() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--decoder", "generate", "--decoder-slots", "8"])
    settings = settings_from_args(args)
    assert (settings.decoder, settings.decoder_slots) == ("generate", 8)
    assert Settings().decoder == "auto"
    assert Settings.build({"KCAP_DECODER": "generate"}).decoder == "generate"
    with pytest.raises(ConfigError):
        Settings(decoder="fast")
    with pytest.raises(ConfigError):
        Settings(decoder_slots=0)


def test_the_slots_are_not_capped_by_the_batch_size(tiny_models: tuple[Path, Path]) -> None:
    """The worker streams images from all its pool threads into the slots (decode_stream.py),
    so a batch size smaller than the slots no longer leaves slots that can never fill."""
    from workers.captioning.engine import Engine

    kosmos, clip = tiny_models
    base = Settings(caption_model=str(kosmos), clip_model=str(clip), dtype="float32")
    small = Engine.load(base.replace(batch_size=4, decoder_slots=32), eager_scorer=False)
    assert small.captioner.decoder_slots == 32
    assert small.can_stream
    assert not Engine.load(base.replace(decoder="generate"), eager_scorer=False).can_stream
