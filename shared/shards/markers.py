"""Done markers: `CAPTIONS/_done/{shard}.json`, written last, the only proof that a shard is done.

As datatrove's completions and img2dataset's stats files: a worker writes a shard's outputs,
commits them, and only then writes its marker (atomically, like every output). A rerun lists
the markers once and decides per shard: todo, skip (done with the same settings), or refuse
(done with other settings: the outputs would mix two settings). The settings hash covers only
what changes outputs (models, prompt, max tokens, threshold, score method, caption prefix and
suffix...), so a rerun with a different batch size still skips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from importlib import metadata
from pathlib import PurePath
from typing import Any

from shared.core.errors import ConfigError
from shared.shards.staging import put_whole
from shared.shards.storage import StorageOptions, base_name, filesystem, join_url, unreachable

log = logging.getLogger(__name__)

MARKERS_FOLDER = "_done"
_SUFFIX = ".json"


def _canonical(value: object) -> object:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"settings_hash cannot hash a {type(value).__name__}: pass plain values")


def settings_hash(**what_changes_outputs: object) -> str:
    """sha256 of the canonical JSON of the settings that change outputs (order-free)."""
    text = json.dumps(
        what_changes_outputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def kcap_version() -> str:
    try:
        return metadata.version("kcap")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class DoneMarker:
    """What a finished shard left: counts per outcome (`output`, `clip_failed`, `errors`),
    errors per class, the outputs it committed (role -> URL), who and when."""

    name: str
    settings_hash: str
    counts: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)
    source: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    worker: str = ""
    started_at: float = 0.0
    finished_at: float = field(default_factory=time.time)
    kcap_version: str = field(default_factory=kcap_version)

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DoneMarker:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        marker = cls(**values)
        if not isinstance(marker.name, str) or not isinstance(marker.settings_hash, str):
            raise ValueError("a marker needs a name and a settings_hash")
        if not isinstance(marker.counts, dict):
            raise ValueError("a marker's counts are an object")
        return marker

    def encode(self) -> bytes:
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n").encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> DoneMarker:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a marker is a JSON object")
        return cls.from_dict(data)


def marker_url(captions_url: str, name: str) -> str:
    return join_url(captions_url, MARKERS_FOLDER, f"{name}{_SUFFIX}")


def write_marker(
    captions_url: str, marker: DoneMarker, *, storage_options: StorageOptions | None = None
) -> str:
    """Write the marker atomically (the last write of a shard); returns its URL."""
    return put_whole(marker_url(captions_url, marker.name), marker.encode(), storage_options=storage_options)


def read_markers(
    captions_url: str, *, storage_options: StorageOptions | None = None
) -> dict[str, DoneMarker]:
    """Every marker under captions_url, by shard name, from one listing. An unreadable marker
    is left out (logged): its shard is done again, and overwrites the same names."""
    fs, root = filesystem(captions_url, storage_options)
    folder = f"{root.rstrip('/')}/{MARKERS_FOLDER}"
    try:
        fs.invalidate_cache(folder)
        names = [
            p for p in fs.ls(folder, detail=False) if p.endswith(_SUFFIX) and not base_name(p).startswith(".")
        ]
        contents = fs.cat(names, on_error="return") if names else {}
    except FileNotFoundError:
        return {}
    except Exception as exc:  # fsspec backends raise their own types
        raise unreachable(captions_url, exc) from exc
    markers: dict[str, DoneMarker] = {}
    for path in names:
        raw = contents.get(path)
        try:
            if not isinstance(raw, bytes):
                raise ValueError(f"unreadable ({raw!r})")
            marker = DoneMarker.decode(raw)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring the marker %s (%s): its shard will be done again", path, exc)
            continue
        markers[base_name(path)[: -len(_SUFFIX)]] = marker
    return markers


class Decision(StrEnum):
    TODO = "todo"
    SKIP = "skip"
    REFUSE = "refuse"


@dataclass(frozen=True)
class ShardDecision:
    action: Decision
    reason: str


def decide(
    name: str, markers: dict[str, DoneMarker], settings: str, *, overwrite: bool = False
) -> ShardDecision:
    """What to do with the shard called name, given the markers read and this run's settings hash."""
    marker = markers.get(name)
    if marker is None:
        return ShardDecision(Decision.TODO, "no done marker")
    if overwrite:
        return ShardDecision(Decision.TODO, "done before; --overwrite redoes it")
    if marker.settings_hash == settings:
        return ShardDecision(Decision.SKIP, f"done with the same settings ({marker.samples} samples)")
    return ShardDecision(
        Decision.REFUSE,
        f"shard {name} was captioned with other settings (hash {marker.settings_hash[:12]}, "
        f"now {settings[:12]}): pass --overwrite to redo it, or write to another captions folder",
    )


def refuse_mixed(decisions: dict[str, ShardDecision]) -> None:
    """Stop a run that would mix settings in one output, naming the first such shard."""
    refused = [d for d in decisions.values() if d.action is Decision.REFUSE]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise ConfigError(refused[0].reason + more)
