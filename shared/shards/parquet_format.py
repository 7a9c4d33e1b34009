"""Parquet shards: an image column (HF `datasets`' Image struct or plain binary) and a key column.

The image column is the one named, or found: a struct with a binary `bytes` field (what
`datasets.Image()` stores) or a binary column, preferring the names `image`, `jpg`, `png`.
The key column is the one named, or `key`, `__key__` or `id`; without one a row's key is
`row-{index:09d}`. Rows become samples under the same rules as tar members: a missing or
oversized image, a key seen before in the shard or one that cannot be written back is an error
sample with a reason. pyarrow reads a row group's column chunk at once, so memory is bounded by
one row group of the image column (writers such as `datasets` keep row groups to ~100 images),
not by the shard; rows are converted to Python a few at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared.core.errors import ShardSourceError
from shared.core.imagetypes import sniff
from shared.shards.keys import IMAGE_EXTENSIONS, key_problem
from shared.shards.refs import Sample

KEY_COLUMNS = ("key", "__key__", "id")
_IMAGE_NAMES = ("image", "jpg", "png", "img", "jpeg", "webp")
_BATCH_ROWS = 16
_SNIFFED_EXT = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "tiff": "tiff", "webp": "webp"}
# Scalar columns carried along in Sample.extra (an existing caption, a url).
_MAX_EXTRA_CHARS = 64 * 1024


def _is_binary(kind: pa.DataType) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _is_image_field(kind: pa.DataType) -> bool:
    if _is_binary(kind):
        return True
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return False


def _is_scalar(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
    )


def image_column_of(schema: pa.Schema, given: str | None, url: str) -> str:
    if given is not None:
        if given not in schema.names or not _is_image_field(schema.field(given).type):
            raise ShardSourceError(
                f"{url} has no image column {given!r} (binary or an Image struct): its columns are "
                f"{', '.join(schema.names)}; pass the right --image-column"
            )
        return given
    found = [name for name in schema.names if _is_image_field(schema.field(name).type)]
    if not found:
        raise ShardSourceError(
            f"{url} has no image column (binary or a datasets Image struct) among {', '.join(schema.names)}: "
            "it cannot be captioned"
        )
    preferred = [name for name in found if name.lower() in _IMAGE_NAMES]
    return (preferred or found)[0]


def key_column_of(schema: pa.Schema, given: str | None, url: str) -> str | None:
    if given is not None:
        if given not in schema.names:
            raise ShardSourceError(
                f"{url} has no key column {given!r}: its columns are {', '.join(schema.names)}; "
                "pass the right --key-column"
            )
        return given
    return next((name for name in KEY_COLUMNS if name in schema.names), None)


def count_rows(raw: IO[bytes]) -> int:
    return int(pq.ParquetFile(raw).metadata.num_rows)


def _image_ext(data: bytes, path: str | None) -> str:
    if path and "." in path:
        ext = path.rsplit(".", 1)[1].lower()
        if ext in IMAGE_EXTENSIONS:
            return ext
    return _SNIFFED_EXT.get(sniff(data[:16]) or "", "bin")


def _key(value: Any, index: int, has_column: bool) -> str:
    if not has_column:
        return f"row-{index:09d}"
    return "" if value is None else str(value)


def parquet_samples(
    raw: IO[bytes],
    *,
    url: str,
    max_image_bytes: int,
    start: int = 0,
    stop: int | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
) -> Iterator[Sample]:
    """The rows of a Parquet file as samples, index from 0, those with start <= index < stop.

    Row groups wholly before start are skipped (only their keys are read, so a repeated key is
    caught in every chunk the same way).
    """
    parquet = pq.ParquetFile(raw)
    schema = parquet.schema_arrow
    image_name = image_column_of(schema, image_column, url)
    key_name = key_column_of(schema, key_column, url)
    extras = [n for n in schema.names if n not in (image_name, key_name) and _is_scalar(schema.field(n).type)]
    seen: dict[str, int] = {}
    first = 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if stop is not None and first >= stop:
            return
        if first + rows <= start:
            if key_name is not None:
                keys = parquet.read_row_group(group, columns=[key_name]).column(0).to_pylist()
                for offset, value in enumerate(keys):
                    seen.setdefault(_key(value, first + offset, True), first + offset)
            first += rows
            continue
        columns = [image_name, *([key_name] if key_name else []), *extras]
        index = first
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=columns):
            data = batch.to_pydict()
            for row in range(batch.num_rows):
                key = _key(data[key_name][row] if key_name else None, index, key_name is not None)
                if index >= start and (stop is None or index < stop):
                    extra = {
                        n: str(data[n][row])
                        for n in extras
                        if data[n][row] is not None and len(str(data[n][row])) <= _MAX_EXTRA_CHARS
                    }
                    yield _sample(key, index, data[image_name][row], image_name, max_image_bytes, seen, extra)
                else:
                    seen.setdefault(key, index)
                index += 1
        first += rows


def _sample(
    key: str,
    index: int,
    cell: Any,
    column: str,
    max_bytes: int,
    seen: dict[str, int],
    extra: dict[str, str],
) -> Sample:
    member = f"row {index}"
    path = None
    data = cell
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
    first = seen.setdefault(key, index)
    reason = key_problem(key) or ""
    if not reason and first != index:
        reason = f"the key {key!r} repeats in this shard (first at row {first})"
    if not reason and data is None:
        reason = (
            f"the image is only a path reference ({path}), not embedded bytes: kcap reads embedded images"
            if path
            else f"no image in the column {column!r}"
        )
    if not reason and len(data) > max_bytes:
        reason = f"the image in row {index} is {len(data)} bytes, over the limit of {max_bytes}"
    if reason:
        return Sample(key, index, member, b"", _image_ext(data or b"", path), reason, extra)
    return Sample(key, index, member, bytes(data), _image_ext(data, path), "", extra)
