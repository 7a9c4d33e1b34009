"""Listing input shards: a path, a folder, a glob or a brace range, local or on any fsspec store."""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

from braceexpand import braceexpand
from fsspec import AbstractFileSystem

from shared.core.errors import ShardSourceError
from shared.shards.refs import ShardKind, ShardRef
from shared.shards.storage import StorageOptions, base_name, filesystem, full_url, is_local, unreachable

log = logging.getLogger(__name__)

# Longest first, so `a.tar.gz` is a tar named `a`, not something named `a.tar`.
_SUFFIXES: tuple[tuple[str, ShardKind], ...] = (
    (".tar.gz", "tar"),
    (".tgz", "tar"),
    (".tar", "tar"),
    (".parquet", "parquet"),
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_PATTERN_CHARS = re.compile(r"[*?\[{]")
# How many missing names of a brace range one message spells out.
_SHOW_MISSING = 3


def shard_kind(name: str) -> tuple[ShardKind, str] | None:
    """(kind, stem) for a shard file name, or None when it is not a shard kcap reads."""
    lowered = name.lower()
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    return None


def _hidden(name: str) -> bool:
    # Temporary names (`.kcap-tmp-...`), markers (`_done/`) and uploads in flight (`_tmp/`).
    return name.startswith((".", "_"))


def list_shards(pattern: str, *, storage_options: StorageOptions | None = None) -> list[ShardRef]:
    """Every shard the pattern names, in the pattern's order (a brace range) or sorted.

    Raises ShardSourceError, one sentence, when nothing matches or the store cannot be reached.
    """
    expanded = list(braceexpand(pattern)) if "{" in pattern else [pattern]
    files: dict[str, int] = {}  # fsspec path -> size
    fs: AbstractFileSystem | None = None
    try:
        plain: list[str] = []
        for each in expanded:
            fs, path = filesystem(each, storage_options)
            if is_local(fs):
                path = posixpath.normpath(path)  # `{.,sub}/a.tar` names ./a.tar: the same file as a.tar
            if _GLOB_CHARS.search(path):
                fs.invalidate_cache()
                matched = fs.glob(path, detail=True)
                files.update(_shard_files(matched.values()))
            else:
                plain.append(path)
        if fs is not None and plain:
            files.update(_plain_paths(fs, plain, pattern))
    except ShardSourceError:
        raise
    except FileNotFoundError as exc:
        raise _nothing_matches(pattern, fs, storage_options) from exc
    except Exception as exc:  # fsspec backends raise their own types (botocore, aiohttp, OSError)
        raise unreachable(pattern, exc) from exc
    if not files or fs is None:
        raise _nothing_matches(pattern, fs, storage_options)
    paths = list(files) if len(expanded) > 1 and not _GLOB_CHARS.search(pattern) else sorted(files)
    return _refs(fs, paths, files, _fixed_prefix(pattern, storage_options))


def _shard_files(entries: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for entry in entries:
        name = base_name(entry["name"])
        if entry.get("type") == "directory" or _hidden(name) or shard_kind(name) is None:
            continue
        found[entry["name"]] = int(entry.get("size") if entry.get("size") is not None else -1)
    return found


def _plain_paths(fs: AbstractFileSystem, paths: list[str], pattern: str) -> dict[str, int]:
    """Plain paths: one file, one folder (its shards), or a brace range (one listing per folder)."""
    if len(paths) == 1:
        fs.invalidate_cache()
        info = fs.info(paths[0])
        if info.get("type") == "directory":
            return _shard_files(fs.ls(paths[0], detail=True))
        if shard_kind(base_name(paths[0])) is None:
            raise ShardSourceError(
                f"{pattern} is not a .tar, .tar.gz, .tgz or .parquet file: name WebDataset or Parquet shards"
            )
        return {paths[0]: int(info.get("size") if info.get("size") is not None else -1)}
    listed: dict[str, dict[str, Any]] = {}
    for folder in dict.fromkeys(path.rstrip("/").rsplit("/", 1)[0] for path in paths):
        fs.invalidate_cache(folder)
        for entry in fs.ls(folder, detail=True):
            listed[entry["name"].rstrip("/")] = entry
    missing = [path for path in paths if path.rstrip("/") not in listed]
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING]) + (", ..." if len(missing) > _SHOW_MISSING else "")
        raise ShardSourceError(
            f"{len(missing)} of the {len(paths)} shards that {pattern} names do not exist ({shown}): "
            "fix the range, or pass a glob to take the shards that are there"
        )
    return _shard_files(listed[path.rstrip("/")] for path in paths)


def _nothing_matches(
    pattern: str, fs: AbstractFileSystem | None, storage_options: StorageOptions | None
) -> ShardSourceError:
    where = ""
    if fs is not None and not is_local(fs):
        bucket = str(fs._strip_protocol(pattern)).split("/", 1)[0]
        try:
            exists = fs.exists(bucket)
        except Exception as exc:  # the store is not there at all: say that instead
            return unreachable(pattern, exc)
        if not exists:
            where = f" (the bucket {bucket!r} does not exist or is not visible with these credentials)"
    return ShardSourceError(
        f"no .tar or .parquet shard matches {pattern}{where}: check the pattern "
        "(a file, a folder, a glob such as shards/*.tar or a brace range such as shards/{00000..00099}.tar)"
    )


def _fixed_prefix(pattern: str, storage_options: StorageOptions | None) -> str:
    """The pattern's folder before its first glob or brace character, as an fsspec path."""
    match = _PATTERN_CHARS.search(pattern)
    head = pattern[: match.start()] if match else pattern
    if match or "." in base_name(head):
        head = head.rsplit("/", 1)[0] if "/" in head else ""
    _, path = filesystem(head or ".", storage_options)
    return str(path).rstrip("/")


def _refs(fs: AbstractFileSystem, paths: list[str], sizes: dict[str, int], prefix: str) -> list[ShardRef]:
    kinds = [shard_kind(base_name(path)) for path in paths]
    stems = [kind_stem[1] for kind_stem in kinds if kind_stem is not None]
    names = stems
    if len(set(stems)) < len(stems):
        # Stems collide (a/00000.tar and b/00000.tar): name each by its path below the prefix.
        names = []
        for path, stem in zip(paths, stems, strict=True):
            rel = path[len(prefix) :].lstrip("/") if path.startswith(prefix + "/") else path
            folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
            names.append(f"{folder}/{stem}".lstrip("/").replace("/", "__"))
        seen: dict[str, str] = {}
        for path, name in zip(paths, names, strict=True):
            if name in seen:
                raise ShardSourceError(
                    f"{seen[name]} and {path} would both write outputs named {name!r}: "
                    "pass a pattern that picks one of them"
                )
            seen[name] = path
    refs = []
    for path, kind_stem, name in zip(paths, kinds, names, strict=True):
        assert kind_stem is not None
        refs.append(ShardRef(url=full_url(fs, path), name=name, kind=kind_stem[0], size=sizes[path]))
    log.info("listed %d shards", len(refs))
    return refs
