"""What the router writes beside a filed image: its caption file and, for an error, its record.

(A caption's record is shared.core.sidecar.caption_record: dataset mode writes the same.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared.core.messages import Result
from shared.core.naming import Placement
from workers.routing.atomic import atomic_write_bytes


def write_caption(path: Path, new: str, *, existing: str) -> str:
    """Write the caption file, honouring --existing for a file kcap did not write; returns the
    text it holds."""
    try:
        found = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        found = None
    if found is None or existing == "overwrite" or found == new:
        text = new
    elif existing == "skip":
        return found  # kept as it is (the producer normally skips such images)
    elif existing == "append":
        # A retry after a crash finds its own text already appended.
        text = found if found.endswith(new) else f"{found} {new}"
    else:  # prepend
        text = found if found.startswith(new) else f"{new} {found}"
    # The caption and nothing else (no newline added), as the original script wrote it.
    atomic_write_bytes(path, text.encode("utf-8"))
    return text


def error_record(result: Result, placement: Placement, *, router: str) -> dict[str, Any]:
    """The `.error.json` of an input filed in errors: why, and what was read."""
    return {
        "job_id": result.job_id,
        "source": result.rel_path,
        "image": placement.image.name if placement.image.exists() else None,
        "reason": result.error_reason,
        "error_class": result.error_class,
        "content_sha256": result.content_sha256,
        "worker": result.worker,
        "router": router,
        "time": time.time(),
    }
