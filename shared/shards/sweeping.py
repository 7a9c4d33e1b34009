"""Removing what killed writers left in an output folder: never outputs, only temporaries.

A writer killed mid-shard leaves a `.kcap-tmp-*` file in a local folder, or on an object store
an object under `{folder}/_tmp/` (killed between upload and copy) or an incomplete multipart
upload (killed mid-upload; invisible, but S3 keeps and bills its parts until it is aborted or a
lifecycle rule expires it). Only what is older than `older_than_s` is taken, so a shard being
written by another worker right now is never touched.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from shared.core.leftovers import sweep_leftovers
from shared.shards.staging import REMOTE_TEMP_FOLDER
from shared.shards.storage import StorageOptions, filesystem, full_url, is_local

log = logging.getLogger(__name__)

# Far longer than any shard takes to write: a temporary this old has no writer any more.
DEFAULT_OLDER_THAN_S = 24 * 3600.0


def sweep_temporaries(
    folder_url: str,
    *,
    older_than_s: float = DEFAULT_OLDER_THAN_S,
    storage_options: StorageOptions | None = None,
) -> list[str]:
    """Remove the abandoned temporaries of the writers of folder_url; returns what was removed
    (URLs, and `upload:{key}` for aborted multipart uploads)."""
    fs, folder = filesystem(folder_url, storage_options)
    folder = folder.rstrip("/")
    if is_local(fs):
        return [str(path) for path in sweep_leftovers([Path(folder)], older_than_s=older_than_s)]
    cutoff = time.time() - older_than_s
    temp_folder = f"{folder}/{REMOTE_TEMP_FOLDER}"
    removed: list[str] = []
    fs.invalidate_cache(temp_folder)
    try:
        entries = fs.ls(temp_folder, detail=True)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry.get("type") == "directory" or _modified(fs, entry) > cutoff:
            continue
        try:
            fs.rm(entry["name"])
        except FileNotFoundError:
            continue  # its writer committed it meanwhile, or another sweep took it
        removed.append(full_url(fs, entry["name"]))
    removed += _abort_uploads(fs, temp_folder, cutoff)
    if removed:
        log.info("removed %d abandoned temporaries under %s", len(removed), temp_folder)
    return removed


def _modified(fs: AbstractFileSystem, entry: dict[str, Any]) -> float:
    stamp = entry.get("LastModified") or entry.get("mtime") or entry.get("updated")
    if stamp is None:
        stamp = fs.modified(entry["name"])
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return float(stamp)


def _abort_uploads(fs: AbstractFileSystem, temp_folder: str, cutoff: float) -> list[str]:
    """Abort multipart uploads to keys under temp_folder started before cutoff (S3 only)."""
    call_s3 = getattr(fs, "call_s3", None)
    if call_s3 is None:
        return []
    bucket, _, prefix = temp_folder.partition("/")
    answer = call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{prefix}/")
    aborted = []
    for upload in answer.get("Uploads", []):
        if upload["Initiated"].timestamp() > cutoff:
            continue
        call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        aborted.append(f"upload:{bucket}/{upload['Key']}")
    return aborted
