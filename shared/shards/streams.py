"""A read-only stream whose failures are the store's, told apart from a broken file."""

from __future__ import annotations

from typing import IO


class SourceReadError(Exception):
    """Reading the underlying file failed (the store, not the format): the caller re-raises it
    as a ShardSourceError, so the job is retried instead of the shard being called broken."""


class GuardedReader:
    """Wraps an open binary file: any exception from its read becomes a SourceReadError, so the
    tar and Parquet readers above it can treat their own exceptions as a broken file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def read(self, size: int = -1) -> bytes:
        try:
            return self.raw.read(size)
        except Exception as exc:  # fsspec backends raise their own types (botocore, aiohttp, OSError)
            raise SourceReadError(f"{type(exc).__name__}: {exc}") from exc

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def close(self) -> None:
        self.raw.close()
