"""Input shards made at test time with the real tools: webdataset's TarWriter, `datasets` and
pyarrow for Parquet, and plain tarfile for the broken layouts no writer would make."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from shared.shards.reading import read_samples
from shared.shards.refs import Sample, ShardRef
from shared.shards.sources import list_shards
from workers.tiny.images import tiny_images

# Far above the tiny test images; tests of the limit pass their own.
MAX_IMAGE_BYTES = 1_000_000


def only_ref(path: Path | str, **options: Any) -> ShardRef:
    """The one shard a path or URL names."""
    (ref,) = list_shards(str(path), **options)
    return ref


def read_all(
    path: Path | str,
    *,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    storage_options: dict[str, Any] | None = None,
    **kw: Any,
) -> list[Sample]:
    """Every sample read_samples yields for the one shard at path (kw: start, stop, columns)."""
    ref = only_ref(path, storage_options=storage_options)
    return list(read_samples(ref, max_image_bytes=max_image_bytes, storage_options=storage_options, **kw))


def image_bytes(n: int, *, seed: int = 0, fmt: str = "PNG") -> list[bytes]:
    """n distinct small images, encoded."""
    out = []
    for image in tiny_images(n, seed=seed, size=(16, 12)):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def wds_tar(path: Path, samples: list[dict[str, Any]], *, compress: bool = False) -> Path:
    """A shard written by webdataset's own TarWriter; each sample is {"__key__": ..., ext: bytes}."""
    import webdataset

    path.parent.mkdir(parents=True, exist_ok=True)
    with webdataset.TarWriter(str(path), encoder=False, compress=compress) as writer:
        for sample in samples:
            writer.write(sample)
    return path


def image_samples(n: int, *, seed: int = 0, prefix: str = "s") -> list[dict[str, Any]]:
    """n webdataset samples: a png and a txt caption each, keys prefix00000..."""
    return [
        {"__key__": f"{prefix}{i:05d}", "png": data, "txt": f"caption {i}".encode()}
        for i, data in enumerate(image_bytes(n, seed=seed))
    ]


def raw_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar with exactly these members in this order (for layouts webdataset would refuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def hf_parquet(path: Path, rows: dict[str, list[Any]], *, image_column: str = "image") -> Path:
    """A Parquet file written by `datasets`, the image column cast to datasets.Image()."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict(rows).cast_column(image_column, datasets.Image())
    dataset.to_parquet(str(path))
    return path


def plain_parquet(path: Path, rows: dict[str, list[Any]], *, row_group_size: int | None = None) -> Path:
    """A Parquet file written by pyarrow, images as a plain binary column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), str(path), row_group_size=row_group_size)
    return path
