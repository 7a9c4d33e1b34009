"""WebDataset tar shards: members to samples when reading, samples to members when writing.

Reading follows webdataset's `tariterators.py`: members are read in order, a member's key is
its path up to the first dot of its base name (`keys.split_member`), and consecutive members
with one key form a sample. Where webdataset raises or silently merges, kcap yields an error
sample with a reason: no image member, two image members, an image over the size limit, a
member name twice in a sample, a key seen before in the shard, a key that cannot be written
back. A tar that breaks off (truncated, or garbage where a header should be) yields what was
readable and then one error sample saying where it broke, never a crash. Python's tarfile
ends a stream quietly on a missing or broken header, so the end is checked here: a tar ends
cleanly only on a zero block (its end-of-archive marker).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from shared.shards.keys import IMAGE_EXTENSIONS, TEXT_EXTENSIONS, key_problem, split_member
from shared.shards.refs import Sample
from shared.shards.streams import SourceReadError

# A text member larger than this is not carried along in Sample.extra.
MAX_EXTRA_BYTES = 64 * 1024
# Bytes of the stream kept to check the end-of-archive block (tarfile reads 10 KiB records).
_TAIL_BYTES = 64 * 1024
# webdataset's TarWriter defaults, so kcap's shards look like any other.
_MEMBER_MODE = 0o444
_OWNER = "bigdata"


class _TailReader(io.RawIOBase):
    """Counts the bytes read and keeps the last few, so the tar's end can be checked."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.total = 0
        self.tail = bytearray()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.total += len(data)
        self.tail += data
        if len(self.tail) > _TAIL_BYTES:
            del self.tail[: len(self.tail) - _TAIL_BYTES]
        return bytes(data)

    def ends_cleanly_at(self, offset: int) -> bool:
        """Whether a whole zero block (tar's end-of-archive marker) was read at offset."""
        start = self.total - len(self.tail)
        if offset < start or offset + tarfile.BLOCKSIZE > self.total:
            return False
        block = self.tail[offset - start : offset - start + tarfile.BLOCKSIZE]
        return block.count(0) == tarfile.BLOCKSIZE


@dataclass
class _Group:
    """The members of one key seen so far."""

    key: str
    members: list[str] = field(default_factory=list)
    exts: set[str] = field(default_factory=set)
    image_member: str = ""
    image_ext: str = ""
    image: bytes = b""
    problem: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def add(
        self, info: tarfile.TarInfo, ext: str, tar: tarfile.TarFile, *, wanted: bool, max_bytes: int
    ) -> None:
        name = info.name
        self.members.append(name)
        if ext in self.exts:
            self._fail(f"the member {name} appears twice in one sample")
            return
        self.exts.add(ext)
        if ext in IMAGE_EXTENSIONS:
            if self.image_member:
                self._fail(f"two image members ({self.image_member}, {name}): one image per key is captioned")
            elif info.size > max_bytes:
                self.image_member, self.image_ext = name, ext
                self._fail(f"the image member {name} is {info.size} bytes, over the limit of {max_bytes}")
            else:
                self.image_member, self.image_ext = name, ext
                if wanted and not self.problem:
                    self.image = _read(tar, info)
        elif ext in TEXT_EXTENSIONS and wanted and info.size <= MAX_EXTRA_BYTES:
            self.extra[ext] = _read(tar, info).decode("utf-8", errors="replace")

    def _fail(self, reason: str) -> None:
        self.problem = self.problem or reason
        self.image = b""

    def sample(self, index: int, seen: dict[str, int]) -> Sample:
        reason = self.problem or key_problem(self.key) or ""
        first = seen.setdefault(self.key, index)
        if not reason and first != index:
            reason = f"the key {self.key!r} repeats in this shard (first at sample {first})"
        if not reason and not self.image_member:
            reason = f"no image member among {', '.join(self.members)}"
        member = self.image_member or self.members[0]
        image = b"" if reason else self.image
        return Sample(self.key, index, member, image, self.image_ext, reason, dict(self.extra))


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    return handle.read() if handle is not None else b""


def _skip(name: str) -> bool:
    # webdataset skips `__meta__`-style members: they describe the shard, they are not samples.
    return "/" not in name and name.startswith("__") and name.endswith("__")


def truncated_key(index: int) -> str:
    return f"_truncated_after_{index - 1}" if index > 0 else "_truncated_at_start"


def tar_samples(
    raw: IO[bytes], *, url: str, max_image_bytes: int, start: int = 0, stop: int | None = None
) -> Iterator[Sample]:
    """The samples of a tar stream, index from 0, yielding those with start <= index < stop.

    Members of samples outside the range are skipped by name without reading their bytes;
    only the current sample's image is ever held. Raises SourceReadError when the file itself
    cannot be read (a store error); a broken tar is an error sample instead.
    """
    head = raw.read(2)
    raw.seek(0)
    source: IO[bytes] = raw
    if head == b"\x1f\x8b":
        source = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    reader = _TailReader(source)
    seen: dict[str, int] = {}
    group: _Group | None = None
    index = 0
    tar: tarfile.TarFile | None = None
    broke = ""
    in_member = False  # a break while reading a member leaves that sample incomplete
    try:
        tar = tarfile.open(fileobj=reader, mode="r|")  # noqa: SIM115 (a generator holds it)
        for info in tar:
            name = info.name[2:] if info.name.startswith("./") else info.name
            if not info.isreg() or _skip(name):
                continue
            key, ext = split_member(name)
            if group is None or key != group.key:
                if group is not None:
                    if index >= start:
                        yield group.sample(index, seen)
                    else:
                        group.sample(index, seen)  # for its key only
                    index += 1
                    if stop is not None and index >= stop:
                        return
                group = _Group(key)
            in_member = True
            group.add(info, ext, tar, wanted=index >= start, max_bytes=max_image_bytes)
            in_member = False
    except SourceReadError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        broke = f"{type(exc).__name__}: {exc}"
    offset = tar.offset if tar is not None else 0
    if not broke and not reader.ends_cleanly_at(offset):
        broke = "no end-of-archive block where the next header should be (truncated or corrupt)"
    lost = ""
    if group is not None and broke and in_member:
        lost = f"; the sample {group.key!r} being read is in it"
    elif group is not None:
        if index >= start and (stop is None or index < stop):
            yield group.sample(index, seen)
        index += 1
    if broke and index >= start and (stop is None or index < stop):
        reason = f"the tar {url} breaks at byte {offset} ({broke}): samples {index} on are lost{lost}"
        yield Sample(truncated_key(index), index, f"byte {offset}", b"", "", reason)


def add_sample(tar: tarfile.TarFile, key: str, members: dict[str, bytes]) -> int:
    """Write one sample's members as webdataset's TarWriter does: `{key}.{ext}`, sorted by ext."""
    now = time.time()
    total = 0
    for ext in sorted(members):
        data = members[ext]
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        info.mtime = int(now)
        info.mode = _MEMBER_MODE
        info.uname = info.gname = _OWNER
        tar.addfile(info, io.BytesIO(data))
        total += len(data)
    return total


def record_bytes(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
