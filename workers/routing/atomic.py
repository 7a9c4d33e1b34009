"""Atomic file writes: a temp file in the destination folder, fsync, then rename."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from shared.core.naming import TEMP_PREFIX

_CHUNK = 1024 * 1024
_TOKEN_HEX = 12  # hex digits that make each temp name unique


def _temp_beside(target: Path) -> Path:
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(_TOKEN_HEX // 2)}-{target.name}")


def remove_temps_of(targets: list[Path]) -> list[Path]:
    """Remove the temp files of writes to these targets that never finished (their writer
    died); returns them. Only this exact pattern is taken: another file's temps never match."""
    removed = []
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(target.parent, set()).add(target.name)
    for folder, names in by_folder.items():
        try:
            entries = [entry.name for entry in os.scandir(folder)]
        except FileNotFoundError:
            continue
        for name in entries:
            if _temp_target(name) in names:
                (folder / name).unlink(missing_ok=True)
                removed.append(folder / name)
    return removed


def _temp_target(name: str) -> str | None:
    """The target name of a temp file's name (see _temp_beside), or None."""
    token = name[len(TEMP_PREFIX) : len(TEMP_PREFIX) + _TOKEN_HEX]
    rest = name[len(TEMP_PREFIX) + _TOKEN_HEX :]
    if not name.startswith(TEMP_PREFIX) or len(token) != _TOKEN_HEX or not rest.startswith("-"):
        return None
    if any(c not in "0123456789abcdef" for c in token):
        return None
    return rest[1:]


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
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
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
