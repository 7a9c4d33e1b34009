"""The command line: --log-level is a setting on every subcommand, and a mistyped flag is
answered by the subcommand's usage with a "did you mean"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.cli.main import build_parser
from shared.cli.options import settings_from_args
from shared.cli.stack import Stack
from shared.core.settings import Settings
from tests.conftest import REPO


def _kcap(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCAP_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--input-dir", "in", "--log-level", "debug"],
        ["--log-level", "DEBUG", "up", "--input-dir", "in"],
        ["run", "--log-level", "DEBUG"],
    ],
)
def test_log_level_is_a_setting_given_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args_or_exit(argv)
    args.log_level = args.log_level or args.top_log_level  # as main() folds them
    settings = settings_from_args(args)
    assert settings.log_level == "DEBUG"
    # Every process `kcap up`/`kcap run` starts gets it.
    assert settings.to_env()["KCAP_LOG_LEVEL"] == "DEBUG"
    assert Stack(settings, flower=False)._child_env("worker")["KCAP_LOG_LEVEL"] == "DEBUG"


def test_log_level_comes_from_the_environment_and_is_checked() -> None:
    assert Settings.build({"KCAP_LOG_LEVEL": "warning"}).log_level == "WARNING"
    assert Settings.build({}).log_level == "INFO"
    with pytest.raises(Exception, match="log_level must be one of"):
        Settings.build({"KCAP_LOG_LEVEL": "LOUD"})


@pytest.mark.parametrize(
    "command", ["up", "run", "watch", "worker", "router", "status", "export", "report", "demo"]
)
def test_every_subcommand_takes_log_level(command: str) -> None:
    parser = build_parser()
    sub = parser._subcommand(command)
    assert sub is not None
    assert "--log-level" in [flag for action in sub._actions for flag in action.option_strings]


def test_a_mistyped_flag_gets_the_subcommands_usage_and_a_suggestion() -> None:
    done = _kcap("up", "--input-dri", "/tmp/in")
    assert done.returncode == 2
    assert "usage: kcap up " in done.stderr, done.stderr
    assert "kcap up: error: unrecognized arguments: --input-dri /tmp/in" in done.stderr
    assert "did you mean --input-dir?" in done.stderr


def test_a_mistyped_subcommand_gets_a_suggestion() -> None:
    done = _kcap("upp")
    assert done.returncode == 2
    assert "did you mean 'up'?" in done.stderr, done.stderr


def test_nothing_close_gets_no_suggestion() -> None:
    done = _kcap("run", "--zzzz")
    assert done.returncode == 2
    assert "usage: kcap run " in done.stderr and "did you mean" not in done.stderr
