"""`metadata.jsonl` for Hugging Face `datasets` (imagefolder): one line per routed image.

The file is append-only. Each folder's job ids are indexed in memory (read once), so a
retried route never writes a second line; a line torn by a crash is cut off before the next
append, so a reader never meets half a line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from shared.core.naming import METADATA_NAME

log = logging.getLogger(__name__)

FILE_NAME = METADATA_NAME


class MetadataLog:
    """The metadata.jsonl of one root folder (output or clip-failed)."""

    def __init__(self, root: Path) -> None:
        self.path = root / FILE_NAME
        self._lock = threading.Lock()
        self._job_ids: set[str] | None = None

    def ensure(self, job_id: str, line: dict[str, Any]) -> bool:
        """Append the line unless this job already has one; True when it was written."""
        with self._lock:
            job_ids = self._load()
            if job_id in job_ids:
                return False
            data = (json.dumps({**line, "job_id": job_id}, ensure_ascii=False) + "\n").encode("utf-8")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one write of one whole line
                os.fsync(fd)
            finally:
                os.close(fd)
            job_ids.add(job_id)
            return True

    def _load(self) -> set[str]:
        if self._job_ids is not None:
            return self._job_ids
        job_ids: set[str] = set()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            # A crash mid-write left part of a line: drop it (its record is rewritten on retry).
            log.warning("%s: cutting a torn last line of %d bytes", self.path, len(raw) - len(complete))
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        for number, text in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
            try:
                job_ids.add(str(json.loads(text)["job_id"]))
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d: not a kcap line; left as it is", self.path, number)
        self._job_ids = job_ids
        return job_ids
