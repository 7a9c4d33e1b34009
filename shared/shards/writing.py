"""Output shards: one writer class per format behind one small interface (img2dataset's model).

A writer streams into a temporary file (`staging.StagedFile`) and `commit()` puts it in place
under its final name; `abort()` throws it away. Used as a context manager it aborts on an
exception and on a block that ends without `commit()`: it never commits by itself, so a
half-written shard can never appear under a final name.
"""

from __future__ import annotations

import logging
import tarfile
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.parquet as pq

from shared.core.errors import ShardWriteError
from shared.shards.keys import ext_problem, key_problem
from shared.shards.rows import CAPTIONS_SCHEMA, row_problem
from shared.shards.staging import StagedFile
from shared.shards.storage import StorageOptions
from shared.shards.tar_format import add_sample, record_bytes

log = logging.getLogger(__name__)

# Extensions the tar writer itself uses for the caption and the record.
_RESERVED_EXTS = frozenset({"txt", "json"})
# Captions rows per Parquet row group: rows are small (no image bytes), so a group is a few
# hundred KiB, which is what bounds the writer's memory.
ROWS_PER_GROUP = 1000


class ShardWriter:
    """The interface every output writer shares: count, url, commit, abort, with-block."""

    def __init__(self, dest_url: str, *, storage_options: StorageOptions | None = None) -> None:
        self._staged = StagedFile(dest_url, storage_options=storage_options)
        self.count = 0
        self._closed = False

    @property
    def url(self) -> str:
        """The final URL (a plain path for local files)."""
        return self._staged.url

    def _finish(self) -> None:
        """Write the format's trailer into the temporary file."""

    def _drop(self) -> None:
        """Close the format's writer over the temporary, so nothing writes to it later (a
        pyarrow writer would write its footer from __del__ into a discarded file)."""

    def _check_open(self) -> None:
        if self._closed:
            raise ShardWriteError(f"the writer for {self.url} is already committed or aborted")

    def commit(self) -> str:
        """Finish the file and put it in place under its final name; returns that URL."""
        self._check_open()
        self._closed = True
        try:
            self._finish()
        except BaseException:
            self._staged.abort()
            raise
        return self._staged.commit()

    def abort(self) -> None:
        """Throw the temporary file away; the final name is untouched. Safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                self._drop()
            except Exception as exc:  # the temporary is thrown away anyway; the store may be gone
                log.debug("closing the writer of %s before discarding it: %s", self.url, exc)
        self._staged.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._staged.done:
            self.abort()


class TarShardWriter(ShardWriter):
    """A WebDataset shard: `{key}.{image_ext}`, `{key}.txt` and `{key}.json` per sample, in
    webdataset's TarWriter layout (members sorted by extension, mode 0444). PAX headers hold
    keys longer than ustar allows. Streams: one sample's members at a time go to the file (on an
    object store, s3fs holds one upload part, its block size, before sending it)."""

    def __init__(self, dest_url: str, *, storage_options: StorageOptions | None = None) -> None:
        super().__init__(dest_url, storage_options=storage_options)
        self._keys: set[str] = set()
        try:
            self._tar = tarfile.open(fileobj=self._staged.handle, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        except BaseException:
            self._staged.abort()
            raise

    def add(self, key: str, image_ext: str, image: bytes, caption_text: str, record: dict[str, Any]) -> None:
        self._check_open()
        problem = key_problem(key) or ext_problem(image_ext)
        if problem is None and image_ext in _RESERVED_EXTS:
            problem = f"the image extension {image_ext!r} is the caption's or the record's"
        if problem is None and key in self._keys:
            problem = f"the key {key!r} is already in this shard"
        if problem is not None:
            raise ShardWriteError(f"cannot add {key!r} to {self.url}: {problem}; file the sample as an error")
        members = {image_ext: image, "txt": caption_text.encode("utf-8"), "json": record_bytes(record)}
        add_sample(self._tar, key, members)
        self._keys.add(key)
        self.count += 1

    def _finish(self) -> None:
        self._tar.close()  # the end-of-archive blocks; the staged handle stays open for commit

    _drop = _finish


class CaptionsParquetWriter(ShardWriter):
    """`CAPTIONS/{shard}.parquet`: one row per sample with the fixed schema of `rows.py`.

    Rows are checked as they are added (an unknown column, a missing key, a bad outcome or a
    wrong type fails at add, naming the row) and written a row group at a time."""

    def __init__(
        self,
        dest_url: str,
        *,
        storage_options: StorageOptions | None = None,
        rows_per_group: int = ROWS_PER_GROUP,
    ) -> None:
        super().__init__(dest_url, storage_options=storage_options)
        self._rows_per_group = rows_per_group
        self._pending: list[dict[str, Any]] = []
        try:
            self._writer = pq.ParquetWriter(self._staged.handle, CAPTIONS_SCHEMA)
        except BaseException:
            self._staged.abort()
            raise

    def add(self, row: dict[str, Any]) -> None:
        self._check_open()
        problem = row_problem(row)
        if problem is not None:
            raise ShardWriteError(f"cannot add the row for {row.get('key')!r} to {self.url}: {problem}")
        self._pending.append(row)
        self.count += 1
        if len(self._pending) >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=CAPTIONS_SCHEMA))
            self._pending = []

    def _finish(self) -> None:
        self._flush()
        self._writer.close()

    def _drop(self) -> None:
        self._pending = []
        self._writer.close()
