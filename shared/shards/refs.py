"""What a shard and a sample are: the plain values that cross from listing to reading to jobs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ShardKind = Literal["tar", "parquet"]
SHARD_KINDS: tuple[ShardKind, ...] = ("tar", "parquet")


@dataclass(frozen=True)
class ShardRef:
    """One input shard.

    url: the full fsspec URL (`s3://bucket/a/00001.tar`), or an absolute path for local files.
    name: the output stem, unique across one listing (`00001`, or `a__00001` when stems collide).
    kind: `tar` or `parquet`. size: bytes, or -1 when the store did not say.
    """

    url: str
    name: str
    kind: ShardKind
    size: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRef:
        kind = data["kind"]
        if kind not in SHARD_KINDS:
            raise ValueError(f"shard kind {kind!r} is not one of {SHARD_KINDS}")
        return cls(url=str(data["url"]), name=str(data["name"]), kind=kind, size=int(data.get("size", -1)))


@dataclass(frozen=True)
class Sample:
    """One sample of a shard, in shard order.

    index counts from 0 over the whole shard, error samples included. member is the tar member
    of the image (or `row N` for Parquet). image is empty when error is set; error is "" or the
    reason the sample cannot be captioned (the caller files it as an `errors` row). extra holds
    the sample's other small text members or columns (an existing caption, say).
    """

    key: str
    index: int
    member: str
    image: bytes
    image_ext: str
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error
