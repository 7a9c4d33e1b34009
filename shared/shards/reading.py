"""Reading one shard's samples, in order, through fsspec: the one entry point for every format."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import IO

import pyarrow as pa

from shared.core.errors import ShardSourceError
from shared.shards.parquet_format import count_rows, parquet_samples
from shared.shards.refs import Sample, ShardRef
from shared.shards.storage import StorageOptions, filesystem, unreachable
from shared.shards.streams import GuardedReader, SourceReadError
from shared.shards.tar_format import tar_samples, truncated_key

log = logging.getLogger(__name__)


def _open(ref: ShardRef, storage_options: StorageOptions | None) -> IO[bytes]:
    fs, path = filesystem(ref.url, storage_options)
    try:
        return GuardedReader(fs.open(path, "rb"))  # type: ignore[return-value]
    except FileNotFoundError as exc:
        raise ShardSourceError(f"the shard {ref.url} does not exist (now): list the shards again") from exc
    except Exception as exc:  # fsspec backends raise their own types
        raise unreachable(ref.url, exc) from exc


def read_samples(
    ref: ShardRef,
    *,
    start: int = 0,
    stop: int | None = None,
    storage_options: StorageOptions | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
    max_image_bytes: int,
) -> Iterator[Sample]:
    """The samples of ref with start <= index < stop, in shard order, streamed.

    Bad samples are error Samples with a reason, and a shard that breaks off ends with one
    error sample; raises ShardSourceError only when the shard cannot be opened or the store
    fails while it is read (the job can then be retried), or a Parquet file has no image column.
    """
    handle = _open(ref, storage_options)
    last = start - 1
    try:
        if ref.kind == "tar":
            samples = tar_samples(
                handle, url=ref.url, max_image_bytes=max_image_bytes, start=start, stop=stop
            )
        else:
            samples = parquet_samples(
                handle,
                url=ref.url,
                max_image_bytes=max_image_bytes,
                start=start,
                stop=stop,
                image_column=image_column,
                key_column=key_column,
            )
        for sample in samples:
            last = sample.index
            yield sample
    except SourceReadError as exc:
        raise ShardSourceError(f"reading {ref.url} failed at sample {last + 1} ({exc}): retry it") from exc
    except pa.ArrowException as exc:
        # A Parquet file that is cut short or corrupt: like a broken tar, one error sample.
        index = last + 1
        if stop is None or index < stop:
            reason = f"the Parquet file {ref.url} cannot be read from sample {index} on ({exc})"
            yield Sample(truncated_key(index), index, f"row {index}", b"", "", reason)
    finally:
        handle.close()


def count_samples(ref: ShardRef, *, storage_options: StorageOptions | None = None) -> int | None:
    """How many samples ref holds when that is cheap to know (Parquet metadata), else None."""
    if ref.kind != "parquet":
        return None
    handle = _open(ref, storage_options)
    try:
        return count_rows(handle)
    except SourceReadError as exc:
        raise ShardSourceError(f"reading {ref.url} failed ({exc}): retry it") from exc
    except pa.ArrowException:
        return None
    finally:
        handle.close()
