"""kcap's argument parser: a mistyped flag gets the subcommand's usage and a "did you mean".

argparse hands a subcommand's unknown flags back to the top-level parser, which names them
under `usage: kcap [-h] COMMAND`: no help to someone who typed `kcap up --input-dri`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


class KcapParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if sys.version_info >= (3, 14):
            # argparse's own suggestions for a mistyped subcommand or choice.
            kwargs.setdefault("suggest_on_error", True)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # Before 3.14, the same suggestion for a mistyped subcommand or choice.
        choices = action.choices
        if sys.version_info < (3, 14) and choices is not None and isinstance(value, str):
            if value not in choices:
                names = [str(c) for c in choices]
                close = difflib.get_close_matches(value, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                listed = ", ".join(names)
                self.error(f"argument {_name(action)}: invalid choice: {value!r}{hint}; choose from {listed}")
        super()._check_value(action, value)

    def parse_args_or_exit(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """parse_args, with unknown arguments reported by the subcommand they were given to."""
        args, extras = self.parse_known_args(argv)
        if extras:
            command = self._subcommand(getattr(args, "command", None)) or self
            command.fail_unrecognized(extras)
        return args

    def _subcommand(self, name: str | None) -> KcapParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                found = action.choices[name]
                return found if isinstance(found, KcapParser) else None
        return None

    def fail_unrecognized(self, extras: list[str]) -> NoReturn:
        flags = [flag for action in self._actions for flag in action.option_strings]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                typed = extra.split("=", 1)[0]
                close = difflib.get_close_matches(typed, flags, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{typed}: did you mean {close[0]}?")
        message = f"unrecognized arguments: {' '.join(extras)}"
        self.error("; ".join([message, *hints]))


def _name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.metavar or action.dest)
