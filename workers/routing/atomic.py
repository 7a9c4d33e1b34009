"""Atomic file writes: a temp file in the destination folder, fsync, then rename."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from shared.core.naming import TEMP_NAME_BYTES, TEMP_PREFIX
from shared.core.records import json_text

_CHUNK = 1024 * 1024


def _temp_beside(target: Path) -> Path:
    """A fresh temp name in target's folder. Its length never depends on target's name: a
    target of 255 bytes (NAME_MAX) must not get a temp name that is longer."""
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex((TEMP_NAME_BYTES - len(TEMP_PREFIX)) // 2)}")


def atomic_write_bytes(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(target)
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)  # only our own temp file, left by a failed write


def atomic_write_json(target: Path, data: dict[str, Any]) -> None:
    text = json_text(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_copy(reader: BinaryIO, target: Path, *, expect_sha256: str | None = None) -> str:
    """Copy an open source into target atomically; returns the sha256 of the bytes copied.

    With expect_sha256, bytes that differ (the source changed after it was read) never reach
    target: the temp copy is removed, so no stray copy is left in a dataset folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(target)
    digest = hashlib.sha256()
    try:
        with temp.open("xb") as writer:
            while block := reader.read(_CHUNK):
                digest.update(block)
                writer.write(block)
            if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
                return digest.hexdigest()
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return digest.hexdigest()
