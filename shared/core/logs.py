"""Logging setup shared by every kcap process.

Every record goes through one filter that masks broker passwords, whoever logged it (Celery
and kombu included). A process logs to the console (stderr) at its level; `kcap up` and
`kcap run` also give the processes they start a log file under the state folder and keep only
warnings and errors on the console, so per-image lines never bury the live display.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shared.core.redaction import mask_url_passwords

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
# Set by `kcap up`/`kcap run` in the environment of the processes they start.
LOG_FILE_ENV = "KCAP_LOG_FILE"
CONSOLE_LEVEL_ENV = "KCAP_CONSOLE_LOG_LEVEL"

_console: logging.Handler | None = None


class _RedactingFilter(logging.Filter):
    """Masks broker passwords in any record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url_passwords(message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


# Warnings that are for the log file alone: on a console that shows only what a user must act
# on they are noise. Python warnings (Celery's "running as root", library deprecations); the
# hub's retries, each logged twice, which bury the error that names the model and what to do
# (workers.captioning.loading); Flower asking workers that are still loading their models.
FILE_ONLY_WARNINGS = ("py.warnings", "huggingface_hub.utils._http", "flower.inspector")


class _QuietConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name not in FILE_ONLY_WARNINGS or record.levelno > logging.WARNING:
            return True
        return not console_is_quiet()


def _handler(handler: logging.Handler, level: str | int) -> logging.Handler:
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RedactingFilter())
    handler.setLevel(level)
    return handler


def configure_logging(level: str | None = None) -> None:
    """Configure root logging once: the level comes from KCAP_LOG_LEVEL unless given; a log file
    and a quieter console come from the environment `kcap up`/`kcap run` give their children."""
    global _console
    chosen = (level or os.environ.get("KCAP_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    root.setLevel(chosen)
    if _console is None:
        console_level = (os.environ.get(CONSOLE_LEVEL_ENV) or chosen).upper()
        _console = _handler(logging.StreamHandler(), console_level)
        _console.addFilter(_QuietConsole())
        root.addHandler(_console)
        logging.captureWarnings(True)
    log_file = os.environ.get(LOG_FILE_ENV)
    if log_file:
        log_to_file(Path(log_file))


def log_to_file(path: Path) -> None:
    """Also write every record at the root level to path (appending; several processes may)."""
    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # backslashreplace: a file name that is not UTF-8 is logged with \xNN escapes, not lost.
    handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    root.addHandler(_handler(handler, logging.NOTSET))


def set_console(handler: logging.Handler | None = None, *, level: str | int | None = None) -> None:
    """Replace the console handler (the live display prints records above itself) and/or its level."""
    global _console
    root = logging.getLogger()
    if handler is not None:
        if _console is not None:
            root.removeHandler(_console)
        _console = _handler(handler, level if level is not None else logging.WARNING)
        _console.addFilter(_QuietConsole())
        root.addHandler(_console)
    elif _console is not None and level is not None:
        _console.setLevel(level)


def adopt_library_logger(name: str) -> None:
    """A library logger that prints through a stderr handler of its own (huggingface_hub's
    printed each line twice, transformers' bypassed the log file) logs through kcap's."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
    logger.propagate = True


def console_level() -> int:
    """The level of what this process shows on its console."""
    return _console.level if _console is not None else logging.getLogger().getEffectiveLevel()


def is_debug() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def console_is_quiet() -> bool:
    """Whether this process's console shows only warnings and errors (under `kcap up`/`run`)."""
    return _console is not None and _console.level > logging.INFO
