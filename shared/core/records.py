"""Reading the `.json` records that mark a job as done, and the JSON text they are written as."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# A lone surrogate: a byte of a file name that is not UTF-8 (PEP 383), or junk from a message.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(data: Any, **options: Any) -> str:
    """JSON that always encodes as UTF-8: text as it is, except that a lone surrogate (a name
    byte that is not UTF-8) is written as its \\udcNN escape, which Python reads back as the
    same surrogate, so such a name round-trips byte for byte."""
    text = json.dumps(data, ensure_ascii=False, **options)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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
