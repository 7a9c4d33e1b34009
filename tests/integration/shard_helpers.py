"""Helpers for dataset-mode tests: shards made with webdataset's own writer and `datasets`,
outputs read back with webdataset and `datasets`, and `kcap run --input-shards` as a process."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import tarfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.core.settings import Settings
from tests.conftest import Processes
from tests.integration.helpers import image_bytes


def tiny_pngs(n: int, *, seed: int) -> list[bytes]:
    from workers.tiny.images import tiny_images

    return [image_bytes(image) for image in tiny_images(n, seed=seed)]


def write_tar_shard(path: Path, samples: Sequence[tuple[str, dict[str, bytes]]]) -> Path:
    """A WebDataset shard written by webdataset's TarWriter: (key, {ext: bytes}) per sample."""
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for key, members in samples:
            sink.write({"__key__": key, **members})
    return path


def append_raw_member(path: Path, name: str, data: bytes) -> None:
    """Add a member the way a careless tool would (webdataset's writer refuses such keys)."""
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_parquet_shard(path: Path, keys: Sequence[str], images: Sequence[bytes]) -> Path:
    """A Parquet file as `datasets` writes one: a key column and an Image column."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({"key": datasets.Value("string"), "image": datasets.Image()})
    data = datasets.Dataset.from_dict(
        {"key": list(keys), "image": [{"bytes": b, "path": None} for b in images]}, features=features
    )
    data.to_parquet(str(path))
    return path


def read_tars(folder: Path) -> dict[str, dict[str, Any]]:
    """Every sample of every tar under folder, read with webdataset: key -> sample (a key seen
    twice fails the caller's count, so they are listed, not merged)."""
    import webdataset as wds

    found: dict[str, dict[str, Any]] = {}
    tars = sorted(str(p) for p in folder.glob("*.tar") if p.is_file())
    if not tars:
        return found
    # webdataset 1.0 drops each shard's file without closing it (tar_file_iterator's `del
    # stream`): that ResourceWarning is webdataset's own, and only it is let pass here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
            key = str(sample["__key__"])
            assert key not in found, f"{key} is twice in {folder}"
            found[key] = sample
        gc.collect()
    return found


def read_parquets(folder: Path) -> list[dict[str, Any]]:
    import datasets

    files = sorted(str(p) for p in folder.glob("*.parquet"))
    return list(datasets.load_dataset("parquet", data_files=files, split="train")) if files else []


def shard_settings(settings: Settings) -> Settings:
    """The pipeline settings without folders: dataset mode names its locations on the command line."""
    return settings.replace(input_dir=None, output_dir=None, clip_failed_dir=None, errors_dir=None)


def shard_args(pattern: str, base: Path, *more: str) -> list[str]:
    """`kcap run` arguments: the pattern into base/{output,clip_failed,captions}."""
    return [
        "--input-shards",
        pattern,
        "--output-dir",
        str(base / "output"),
        "--clip-failed-dir",
        str(base / "clip_failed"),
        "--captions-dir",
        str(base / "captions"),
        *more,
    ]


def run_shards(
    procs: Processes,
    settings: Settings,
    pattern: str,
    base: Path,
    *args: str,
    timeout_s: float = 240,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`kcap run --input-shards pattern` into base/{output,clip_failed,captions}; waits for it."""
    process = procs.kcap(
        "run", *shard_args(pattern, base, *args), settings=shard_settings(settings), extra_env=extra_env
    )
    process.wait(timeout=timeout_s)
    return subprocess.CompletedProcess(process.args, process.returncode, procs.logs(), "")


def markers(captions: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((captions / "_done").glob("*.json"))}
