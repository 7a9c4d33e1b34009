"""The house's rules: no module builds settings at import, and the import contracts hold."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("shared", "producer", "workers")
# Flower's `celery -A` entry point: building the app from KCAP_* at import is its one job,
# which is why it is a module of its own that nothing imports.
BUILDS_AT_IMPORT = {"shared.core.flower_app"}


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            names.append(info.name)
    return sorted(set(names) - BUILDS_AT_IMPORT)


def test_every_module_imports_with_a_bad_setting_in_the_environment() -> None:
    modules = _modules()
    assert "shared.core.settings" in modules and "workers.captioning.task" in modules
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "KCAP_BATCH_SIZE": "not-a-number", "KCAP_DTYPE": "fp8"}
    done = subprocess.run([sys.executable, "-c", code, *modules], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # ...and the bad value is still refused, clearly, when settings are built.
    built = subprocess.run(
        [sys.executable, "-c", "from shared.core.settings import Settings; Settings.build()"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert built.returncode != 0 and "KCAP_BATCH_SIZE='not-a-number' is not a valid int" in built.stderr


def test_the_import_contracts_hold() -> None:
    """Floors, the torch-free storage side and no cycles (pyproject.toml, [tool.importlinter])."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "broken" not in done.stdout.lower().replace("0 broken", "")
