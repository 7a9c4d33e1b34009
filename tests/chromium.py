"""Headless Chromium for the report test and the docs screenshots: one way to find and run it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(
    url: str, profile: Path, *extra: str, budget_ms: int = 5000
) -> subprocess.CompletedProcess[str]:
    """One headless run with a private profile; extra flags say what to produce."""
    binary = chromium_binary()
    assert binary is not None
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        # Lets the page's scripts, XHRs and image loads settle before the DOM or pixels are taken.
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
