"""Atomic file writes: a temp file in the destination folder, fsync, then rename."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from shared.core.naming import TEMP_NAME_BYTES, TEMP_PREFIX, name_bytes
from shared.core.records import json_text

_CHUNK = 1024 * 1024
_TOKEN_HEX = 12  # random hex digits that make each temp name unique
_TAG_HEX = TEMP_NAME_BYTES - len(TEMP_PREFIX) - _TOKEN_HEX  # hex digits of the target name's hash


def _temp_beside(target: Path) -> Path:
    """A fresh temp name in target's folder. Its length never depends on target's name (a
    target of 255 bytes, NAME_MAX, must not get a temp name that is longer); its tail is a
    hash of target's name, so the temps of a write that never finished can be told apart
    from the temps of other files (remove_temps_of)."""
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(_TOKEN_HEX // 2)}{_tag(target.name)}")


def _tag(name: str) -> str:
    return hashlib.sha256(name_bytes(name)).hexdigest()[:_TAG_HEX]


def remove_temps_of(targets: list[Path]) -> list[Path]:
    """Remove the temp files of writes to these targets that never finished (their writer
    died); returns them. Only temps whose tail is a target's tag are taken: another file's
    temps never match (but for a 48-bit hash collision)."""
    removed = []
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(target.parent, set()).add(_tag(target.name))
    for folder, tags in by_folder.items():
        try:
            entries = [entry.name for entry in os.scandir(folder)]
        except FileNotFoundError:
            continue
        for name in entries:
            if name.startswith(TEMP_PREFIX) and len(name) == TEMP_NAME_BYTES and name[-_TAG_HEX:] in tags:
                (folder / name).unlink(missing_ok=True)
                removed.append(folder / name)
    return removed


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
