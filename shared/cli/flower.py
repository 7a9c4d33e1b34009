"""`kcap flower`: Flower against kcap's app, loopback by default, basic auth off loopback."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.core.errors import ConfigError
from shared.core.settings import Settings


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("flower", help="the Flower dashboard for kcap's workers and tasks")
    add_settings_arguments(parser)
    parser.set_defaults(handler=flower)


def is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """argv and environment for Flower. Secrets travel in the environment, never in argv."""
    settings.require_broker()
    if not is_loopback(settings.flower_address) and not settings.flower_basic_auth:
        raise ConfigError(
            f"refusing to start Flower on {settings.flower_address} without a password: "
            "set KCAP_FLOWER_BASIC_AUTH=user:password, or bind to 127.0.0.1"
        )
    env = settings.child_env()
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "shared.core.flower_app:app",
        "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
    ]
    return argv, env


def flower(args: argparse.Namespace) -> int:
    argv, env = flower_command(settings_from_args(args))
    os.execvpe(argv[0], argv, env)  # Flower takes over this process
    return 0  # pragma: no cover - exec does not return
