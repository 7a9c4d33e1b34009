"""fsspec in one place: a URL or a plain path to a filesystem, and store errors to sentences."""

from __future__ import annotations

import logging
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from shared.core.errors import ShardSourceError

log = logging.getLogger(__name__)

StorageOptions = dict[str, Any]

# Which pip extra brings the filesystem of a protocol, for the message when it is missing.
_EXTRAS = {
    "s3": "kcap[s3] (s3fs)",
    "s3a": "kcap[s3] (s3fs)",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "hf": "huggingface_hub",
}


def filesystem(url: str, storage_options: StorageOptions | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem that serves url and the path inside it (a plain path is a local file)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        protocol = url.split("://", 1)[0]
        extra = _EXTRAS.get(protocol, f"the fsspec filesystem for {protocol}://")
        raise ShardSourceError(
            f"{url} needs {extra}, which is not installed: pip install it ({exc})"
        ) from exc
    except ValueError as exc:
        raise ShardSourceError(f"{url} is not a path or an fsspec URL kcap can open: {exc}") from exc
    return fs, path


def is_local(fs: AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def full_url(fs: AbstractFileSystem, path: str) -> str:
    """The URL to hand on: a plain absolute path for local files, `proto://...` otherwise."""
    if is_local(fs):
        return path
    return str(fs.unstrip_protocol(path))


def parent_url(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0]


def base_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def join_url(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def unreachable(url: str, exc: BaseException) -> ShardSourceError:
    """One sentence for a store that did not answer as a store should, with what to check."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, PermissionError):
        hint = "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or storage options)"
    else:
        hint = (
            "check the endpoint (AWS_ENDPOINT_URL or the endpoint_url storage option), the credentials "
            "and the network"
        )
    return ShardSourceError(f"cannot reach the store behind {url} ({detail}): {hint}")
