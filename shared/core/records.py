"""Reading the `.json` records that mark a job as done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from path, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_job_id(path: Path) -> str | None:
    record = read_json(path)
    value = record.get("job_id") if record else None
    return value if isinstance(value, str) else None
