"""`metadata.jsonl` for Hugging Face `datasets` (imagefolder): one line per routed image.

The file is append-only. Each folder's job ids are indexed in memory (read once), so a
retried route never writes a second line; a line torn by a crash is cut off before the next
append, so a reader never meets half a line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from shared.core.naming import METADATA_NAME
from shared.core.records import json_text

log = logging.getLogger(__name__)


class MetadataLog:
    """The metadata.jsonl of one root folder (output or clip-failed).

    Lines are group-committed: route threads that append at the same time share one write
    and one fsync. Each caller returns only once its own line is on disk.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / METADATA_NAME
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._job_ids: set[str] | None = None
        self._pending: list[bytes] = []
        self._queued = 0  # lines handed in so far
        self._written = 0  # lines on disk so far
        self._flushing = False
        # Batches that failed, as (first line, last line, why); their callers raise it.
        self._failures: list[tuple[int, int, BaseException]] = []

    def ensure(self, job_id: str, line: dict[str, Any]) -> bool:
        """Append the line unless this job already has one; True when it was written."""
        data = (json_text({**line, "job_id": job_id}) + "\n").encode("utf-8")
        with self._lock:
            job_ids = self._load()
            if job_id in job_ids:
                return False
            job_ids.add(job_id)
            self._pending.append(data)
            self._queued += 1
            mine = self._queued
            while self._written < mine:
                if self._flushing:
                    self._flushed.wait()
                else:
                    self._flush_locked()
            for first, last, error in self._failures:
                if first <= mine <= last:
                    job_ids.discard(job_id)  # not on disk: the route task's retry writes it
                    raise error
            return True

    def _flush_locked(self) -> None:
        """Write every pending line with one write and one fsync (called holding the lock,
        which it releases around the I/O so that other threads can queue their lines)."""
        batch, self._pending = self._pending, []
        first, last = self._written + 1, self._queued
        self._flushing = True
        self._lock.release()
        error: BaseException | None = None
        try:
            self._append(b"".join(batch))
        except BaseException as exc:
            error = exc
        finally:
            self._lock.acquire()
            self._flushing = False
            self._written = last  # done with, on disk or given up (its callers raise)
            if error is not None:
                self._failures = [*self._failures[-63:], (first, last, error)]
            self._flushed.notify_all()

    def _append(self, data: bytes) -> None:
        """Append whole lines and fsync; on failure, cut the file back so no torn line stays."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # a regular file takes it all at once, unless the disk is full
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

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
