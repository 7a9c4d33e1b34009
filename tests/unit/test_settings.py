from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from shared.core.errors import ConfigError
from shared.core.logs import _RedactingFilter
from shared.core.prompts import DEFAULT_PROMPT
from shared.core.redaction import mask_url_passwords
from shared.core.settings import Settings
from shared.core.thresholds import Thresholds


def test_defaults_carry_over_from_the_original_script() -> None:
    settings = Settings.build({})
    assert settings.caption_model == "microsoft/kosmos-2-patch14-224"
    assert settings.clip_model == "openai/clip-vit-large-patch14"
    assert settings.prompts == [DEFAULT_PROMPT]
    assert DEFAULT_PROMPT.startswith("Give a detailed description of this image")
    assert settings.max_new_tokens == 128
    # No threshold given: each scorer family's default, and CLIP's is the original script's 15.
    assert settings.threshold is None and settings.threshold_family == ""
    assert Thresholds(settings.threshold, given_for="clip").for_family("clip") == 15.0
    assert settings.input_mode == "copy"
    # The original script's score routes, and its caption text is kept as it came.
    assert settings.route_score == "original"
    options = settings.caption_options()
    assert options.route_score == "original"
    assert (options.strip_openings, options.collapse_whitespace, options.trim_partial) == ((), False, False)


def test_the_routing_score_and_the_cleanup_come_from_flags_or_the_environment() -> None:
    from shared.cli.options import add_settings_arguments, settings_from_args

    env = {
        "KCAP_ROUTE_SCORE": "sentence-chunks",
        "KCAP_STRIP_OPENINGS": "training",
        "KCAP_COLLAPSE_WHITESPACE": "1",
    }
    from_env = Settings.build(env).caption_options()
    assert from_env.route_score == "sentence-chunks" and from_env.collapse_whitespace
    assert "The image shows" in from_env.strip_openings and len(from_env.strip_openings) == 14
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(
        ["--route-score", "sentence-chunks", "--strip-openings", "A|B", "--collapse-whitespace"]
    )
    from_flags = settings_from_args(args).caption_options()
    assert (from_flags.route_score, from_flags.strip_openings, from_flags.collapse_whitespace) == (
        "sentence-chunks",
        ("A", "B"),
        True,
    )
    with pytest.raises(ConfigError, match="route_score must be one of original, sentence-chunks"):
        Settings.build({"KCAP_ROUTE_SCORE": "best"})


def test_environment_then_flags_take_precedence(tmp_path: Path) -> None:
    env = {
        "KCAP_THRESHOLD": "20.5",
        "KCAP_BATCH_SIZE": "8",
        "KCAP_POLLING": "yes",
        "KCAP_OUTPUT_DIR": str(tmp_path / "out"),
    }
    settings = Settings.build(env, batch_size=32, threshold=None)
    assert settings.threshold == 20.5  # flag None falls through to the environment
    assert settings.batch_size == 32  # a given flag wins
    assert settings.polling is True
    assert settings.output_dir == (tmp_path / "out").resolve()
    assert settings.errors_dir == (tmp_path / "errors").resolve()


def test_scoring_only_with_a_clip_failed_folder(tmp_path: Path) -> None:
    assert not Settings.build({}, output_dir=tmp_path).score_enabled
    assert Settings.build({}, output_dir=tmp_path, clip_failed_dir=tmp_path / "f").score_enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KCAP_BATCH_SIZE": "many"}, "KCAP_BATCH_SIZE='many' is not a valid int"),
        ({"KCAP_POLLING": "perhaps"}, "KCAP_POLLING='perhaps' is not a valid bool"),
        ({"KCAP_DTYPE": "float8"}, "dtype must be one of"),
        ({"KCAP_BATCH_SIZE": "0"}, "batch_size must be at least 1"),
    ],
)
def test_bad_values_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.build(env)


def test_to_env_round_trips(tmp_path: Path) -> None:
    settings = Settings.build({}, input_dir=tmp_path / "in", output_dir=tmp_path / "out", polling=True)
    assert Settings.build(settings.to_env()) == settings


def test_password_is_masked_in_repr_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.build({"KCAP_BROKER_URL": "rediss://kcap:s3cr3t@redis.example:6380/0"})
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)
    assert "rediss://kcap:***@redis.example:6380/0" in repr(settings)
    assert settings.masked_broker_url == "rediss://kcap:***@redis.example:6380/0"
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "connecting to %s", (settings.broker_url,), None
    )
    _RedactingFilter().filter(record)
    assert "s3cr3t" not in record.getMessage()
    assert "***" in record.getMessage()


def test_flower_password_never_in_repr() -> None:
    settings = Settings.build({"KCAP_FLOWER_BASIC_AUTH": "admin:hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.flower_basic_auth == "admin:hunter2"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:pw@h/0 and amqp://g:g@x//", "redis://user:***@h/0 and amqp://g:***@x//"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        # A password with @ (or : or /) in it is hidden whole, up to the host.
        ("redis://:p@ss@h:1/0", "redis://:***@h:1/0"),
        ("redis://kcap:a@b@c@redis.example:6380/0 x", "redis://kcap:***@redis.example:6380/0 x"),
        (
            "redis+socket://:p@w@/tmp/kcap-redis-x/redis.sock",
            "redis+socket://:***@/tmp/kcap-redis-x/redis.sock",
        ),
    ],
)
def test_mask_url_passwords(text: str, masked: str) -> None:
    assert mask_url_passwords(text) == masked


def test_prompt_presets_and_several_prompts() -> None:
    assert Settings.build({}, prompt="brief").prompts == ["<grounding>An image of"]
    assert Settings.build({}, prompt="grounded-detailed").prompts == [
        "<grounding> Describe this image in detail:"
    ]
    several = Settings.build({"KCAP_PROMPT": "brief\nA photo of"})
    assert several.prompts == ["<grounding>An image of", "A photo of"]


@pytest.mark.parametrize("ext", ["txt", ".json", "./x"])
def test_caption_extension_is_checked(ext: str) -> None:
    with pytest.raises(ConfigError, match="caption_ext"):
        Settings.build({}, caption_ext=ext)


@pytest.mark.parametrize(
    "login", [":", "admin:", ":secret", "nocolon", "admin:pw,:", "admin:pw,x", "a:b,,c:d"]
)
def test_a_flower_login_without_a_user_or_a_password_is_refused(login: str) -> None:
    with pytest.raises(ConfigError, match="KCAP_FLOWER_BASIC_AUTH"):
        Settings.build({"KCAP_FLOWER_BASIC_AUTH": login})
    assert (
        Settings.build({"KCAP_FLOWER_BASIC_AUTH": "admin:p@ss:word"}).flower_basic_auth == "admin:p@ss:word"
    )
    assert Settings.build({"KCAP_FLOWER_BASIC_AUTH": "a:1,b:2"}).flower_basic_auth == "a:1,b:2"
