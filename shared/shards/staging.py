"""A file written under a temporary name and put in place whole, or not at all.

Local: the temporary file sits in the destination folder (`.kcap-tmp-{token}-{name}`, the name
kcap's leftover cleaner knows), is fsynced, then `os.replace`d over the final name, and the
folder is fsynced so the rename survives a power cut.

Object stores: the bytes stream to `{folder}/_tmp/{token}-{name}`; commit completes that upload,
then copies it to the final key (a server-side copy, which readers see whole or not at all) and
removes the temporary. Nothing is ever opened for writing under the final key, so neither an
exception nor a kill can leave a partial object there: s3fs's file `close()` completes a
multipart upload even when called from `__exit__` after an exception (the hole img2dataset has),
so abort discards the upload instead of closing it, and a killed process leaves at most an
incomplete upload or an object under `_tmp/`, never under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from typing import IO

from fsspec.spec import AbstractBufferedFile

from shared.core.errors import ShardWriteError
from shared.core.naming import TEMP_PREFIX
from shared.shards.storage import StorageOptions, base_name, filesystem, full_url, is_local

log = logging.getLogger(__name__)

REMOTE_TEMP_FOLDER = "_tmp"
_TOKEN_HEX = 12  # each temporary's random part: secrets.token_hex(6)


def _temp_path(fs_local: bool, folder: str, token: str, name: str) -> str:
    """Where the temporary of folder/name lives (token: _TOKEN_HEX hex, or a glob for them)."""
    if fs_local:
        return os.path.join(folder, f"{TEMP_PREFIX}{token}-{name}")
    return f"{folder}/{REMOTE_TEMP_FOLDER}/{token}-{name}"


class StagedFile:
    """One output file in the making. Write to `handle`, then `commit()` or `abort()` once."""

    def __init__(self, dest_url: str, *, storage_options: StorageOptions | None = None) -> None:
        self.fs, self.path = filesystem(dest_url, storage_options)
        self.url = full_url(self.fs, self.path)
        name = base_name(self.path)
        folder = self.path.rstrip("/").rsplit("/", 1)[0]
        self.local = is_local(self.fs)
        self.temp = _temp_path(self.local, folder, secrets.token_hex(_TOKEN_HEX // 2), name)
        if self.local:
            os.makedirs(folder, exist_ok=True)
            self.handle: IO[bytes] = open(self.temp, "xb")  # noqa: SIM115 (closed by commit or abort)
        else:
            self.handle = self.fs.open(self.temp, "wb")
        self.done = False

    def commit(self) -> str:
        """Put the file in place under its final name; returns its URL."""
        if self.done:
            raise ShardWriteError(f"{self.url} was already committed or aborted: open a new writer")
        self.done = True
        try:
            if self.local:
                self.handle.flush()
                os.fsync(self.handle.fileno())
                self.handle.close()
                os.replace(self.temp, self.path)
            else:
                self.handle.close()  # completes the upload, under the temporary key
                self.fs.copy(self.temp, self.path)
        except BaseException:
            self._discard()
            raise
        if self.local:
            _fsync_folder(os.path.dirname(self.path))
        else:
            self._remove_remote_temp()
        log.debug("committed %s", self.url)
        return self.url

    def abort(self) -> None:
        """Throw the temporary away; the final name is untouched. Safe to call twice."""
        if self.done:
            return
        self.done = True
        self._discard()

    def _discard(self) -> None:
        if self.local:
            with contextlib.suppress(OSError):
                self.handle.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            return
        handle = self.handle
        if isinstance(handle, AbstractBufferedFile):
            # Abort the multipart upload (also when a failed close() left one open), then mark
            # the file closed so neither close() nor its __del__ ever completes it.
            with contextlib.suppress(Exception):
                handle.discard()
            handle.closed = True
        else:
            with contextlib.suppress(Exception):
                handle.close()
        self._remove_remote_temp()

    def _remove_remote_temp(self) -> None:
        try:
            self.fs.rm(self.temp)
        except FileNotFoundError:
            pass
        except Exception as exc:  # the store is gone: the temporary stays under _tmp/, say so
            log.warning("could not remove the temporary %s (%s): it is never read as output", self.temp, exc)


def put_whole(dest_url: str, data: bytes, *, storage_options: StorageOptions | None = None) -> str:
    """Write a small file (a marker, a report) in place whole or not at all; returns its URL."""
    staged = StagedFile(dest_url, storage_options=storage_options)
    try:
        staged.handle.write(data)
    except BaseException:
        staged.abort()
        raise
    return staged.commit()


def remove_stale(dest_url: str, *, storage_options: StorageOptions | None = None) -> int:
    """Remove the temporaries of dest_url that a killed writer left; how many. Call it only
    where no live writer can have one (the holder of a shard job's lease)."""
    fs, path = filesystem(dest_url, storage_options)
    folder, _, name = path.rstrip("/").rpartition("/")
    stale = fs.glob(_temp_path(is_local(fs), folder, "?" * _TOKEN_HEX, name))
    for temp in stale:
        log.warning("removing %s, left by a worker that died writing it", temp)
        fs.rm(temp)
    return len(stale)


def check_writable(folder_url: str, *, storage_options: StorageOptions | None = None) -> None:
    """Write a small temporary into folder_url, where a writer's temporaries go, and remove it:
    a destination that cannot take one (a bucket that is not there, credentials that may only
    read) then stops a run at its start, not after every shard was captioned for nothing.

    Raises ShardWriteError, one sentence. A kill between the write and the removal leaves a
    temporary that the sweepers know (sweeping.sweep_temporaries)."""
    try:
        fs, folder = filesystem(folder_url, storage_options)
        local = is_local(fs)
        probe = _temp_path(local, folder.rstrip("/"), secrets.token_hex(_TOKEN_HEX // 2), "write-check")
        if local:
            os.makedirs(folder, exist_ok=True)
        with fs.open(probe, "wb") as handle:
            handle.write(b"kcap")
        fs.rm(probe)
    except Exception as exc:  # fsspec backends raise their own types (botocore, aiohttp, OSError)
        raise ShardWriteError(
            f"cannot write to {folder_url} ({type(exc).__name__}: {exc}): check that the bucket or "
            "folder exists and that these credentials may write there"
        ) from exc


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is already done
    finally:
        os.close(fd)
