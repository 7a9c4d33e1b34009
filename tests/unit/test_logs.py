"""Library loggers under `kcap up`/`run`: each record once, in the log file, and on the quiet
console only when it is for the user."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

_CHILD = textwrap.dedent(
    """
    import logging
    from shared.core.logs import configure_logging
    from workers.captioning.loading import adopt_library_logs
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    configure_logging()
    hub_logging.get_logger("huggingface_hub")  # the hub's own stderr handler is in place
    transformers_logging.get_logger("transformers")  # and transformers'
    adopt_library_logs()
    logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
    transformers_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
    logging.getLogger("flower.inspector").warning("Inspect method stats failed")
    logging.getLogger("workers.captioning.task").warning("job 1 (a.png): unreadable image")
    """
)

LINES = ("Retrying in 1s", "a transformers warning", "Inspect method stats failed", "unreadable image")


def _run(tmp_path: Path, **env: str) -> tuple[str, str]:
    log_file = tmp_path / "worker.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("KCAP_")}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env={**base, "PYTHONPATH": str(REPO), "KCAP_LOG_FILE": str(log_file), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr, log_file.read_text()


def test_a_quiet_console_shows_what_matters_once_and_the_file_holds_everything(tmp_path: Path) -> None:
    console, file = _run(tmp_path, KCAP_CONSOLE_LOG_LEVEL="WARNING")
    assert console.count("unreadable image") == 1
    assert console.count("a transformers warning") == 1  # not also through transformers' own handler
    assert "Retrying in" not in console and "Inspect method" not in console, console
    for line in LINES:
        assert file.count(line) == 1, file


@pytest.mark.slow  # a second child importing transformers; the quiet console is the default
def test_a_console_at_the_log_level_shows_them_all_once(tmp_path: Path) -> None:
    console, _ = _run(tmp_path)
    for line in LINES:
        assert console.count(line) == 1, console
