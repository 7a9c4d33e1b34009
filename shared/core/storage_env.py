"""fsspec storage options handed from `kcap run --storage-option` to its worker processes.

They travel in the workers' environment, never in a message: they may hold credentials.
Without them each store takes its own usual environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS).
"""

from __future__ import annotations

import json
import os
from typing import Any

STORAGE_OPTIONS_ENV = "KCAP_STORAGE_OPTIONS"


def storage_options_from_env() -> dict[str, Any]:
    raw = os.environ.get(STORAGE_OPTIONS_ENV, "")
    return dict(json.loads(raw)) if raw else {}
