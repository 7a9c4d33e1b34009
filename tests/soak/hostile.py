"""The soak's hostile cases (issue 10), mixed into its normal traffic.

- files: tiny extreme-aspect PNGs and images just under the pixel cap, image bytes under
  names kcap writes (`.txt`, `.json`, `metadata.jsonl`), and writers that pause longer than
  the stability wait;
- messages: junk that is valid JSON but no Celery message, and bytes that are not JSON, on
  both queues; each must land in the dead-letter list and stop nothing;
- names (issue 19): every kind of legal name (bytes that are not UTF-8, a backslash, a
  newline, a leading dash, 200 to 255 bytes, names that differ only in case or in Unicode
  normalisation) and a path deeper than PATH_MAX; each ends in exactly one folder;
- neighbours: a local client without the password (and one with a wrong one) trying the
  embedded Redis; every command it sends must be refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

# The soak sets KCAP_MAX_PIXELS to this, so that "near the cap" stays cheap on a CPU.
SOAK_MAX_PIXELS = 4_000_000

POISON_BODIES = (b"null", b"{}", b"123", b"[1, 2]", b"\xff\xfe not json", b'{"body": "x"}')


@dataclass(frozen=True)
class HostileFile:
    rel: str
    data: bytes
    kind: str  # tall | near-cap | sidecar | pause | name | deep
    bad: bool  # must end in errors


def _png(size: tuple[int, int], colour: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _photo_like(size: tuple[int, int], seed: int) -> bytes:
    from PIL import Image

    noise = Image.effect_noise((size[0] // 8, size[1] // 8), 40 + seed % 30).convert("RGB")
    buffer = io.BytesIO()
    noise.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def hostile_files(n: int) -> list[HostileFile]:
    """About n hostile files, a few of each kind."""
    files: list[HostileFile] = []
    per_kind = max(1, n // 4)
    for i in range(per_kind):
        size = (1, 65_000) if i % 2 == 0 else (65_000, 1)
        files.append(HostileFile(f"hostile/tall_{i:03d}.png", _png(size, i), "tall", True))
        side = int(SOAK_MAX_PIXELS**0.5) - 1 - i
        files.append(
            HostileFile(f"hostile/nearcap_{i:03d}.jpg", _photo_like((side, side), i), "near-cap", False)
        )
        name = ("shot_{i:03d}.txt", "photo_{i:03d}.json", "metadata.jsonl", "other_{i:03d}.jsonl")[i % 4]
        folder = "hostile" if i % 4 != 2 else f"hostile/sub_{i:03d}"
        files.append(HostileFile(f"{folder}/{name.format(i=i)}", _png((32, 32), 30 + i), "sidecar", True))
        files.append(HostileFile(f"hostile/pause_{i:03d}.bmp", _bmp(i), "pause", False))
    return files


def name_files(folder: str = "names") -> list[HostileFile]:
    """One image under every kind of legal name, a bad image under a long and a non-UTF-8
    name (their `.error.json` names must fit too), and an image deeper than PATH_MAX (write
    it with write_by_descriptor). Every file's bytes differ."""
    good = [
        os.fsdecode(b"caf\xe9 latin-1.png"),  # not UTF-8
        "back\\slash.png",
        "new\nline.png",
        "-dash.png",
        "a" * 196 + ".png",  # 200 bytes
        "b" * 246 + ".png",  # 250 bytes
        "c" * 251 + ".png",  # 255 bytes (NAME_MAX): its .json would be 256
        "e" * 250 + ".png",  # 254 bytes, twice: the second takes a collision name (+9)
        "e" * 250 + ".jpg",
        "Case.png",
        "case.png",
        unicodedata.normalize("NFC", "café nfc.png"),
        unicodedata.normalize("NFD", "café nfc.png"),
    ]
    files = [
        HostileFile(f"{folder}/{name}", _png((24 + i, 16), 40 + i), "name", False)
        for i, name in enumerate(good)
    ]
    truncated = _photo_like((64, 64), 3)[:300]
    for i, name in enumerate((os.fsdecode(b"bad \xff.jpg"), "t" * 246 + ".jpg")):
        files.append(HostileFile(f"{folder}/{name}", truncated + bytes([i]), "name", True))
    deep = "/".join(["d" * 250] * 17)  # about 4,300 bytes: over PATH_MAX
    files.append(HostileFile(f"{folder}/deep/{deep}/deep.png", _png((20, 20), 7), "deep", True))
    return files


def write_by_descriptor(root: Path, rel: str, data: bytes) -> None:
    """Write root/rel folder by folder through descriptors: no call takes the whole path,
    so it may be deeper than PATH_MAX."""
    _by_descriptor(root, rel, data)


def read_by_descriptor(root: Path, rel: str) -> bytes | None:
    """root/rel's bytes (None when it is not there), however deep it lies."""
    try:
        return _by_descriptor(root, rel, None)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _by_descriptor(root: Path, rel: str, data: bytes | None) -> bytes:
    *folders, name = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder in folders:
            if data is not None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, dir_fd=fd)
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        if data is None:
            with os.fdopen(os.open(name, os.O_RDONLY, dir_fd=fd), "rb") as reader:
                return reader.read()
        with os.fdopen(
            os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd), "wb"
        ) as writer:
            writer.write(data)
        return data
    finally:
        os.close(fd)


def _bmp(seed: int) -> bytes:
    from PIL import Image

    image = Image.effect_noise((160, 120), 30 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "BMP")  # uncompressed: a cut anywhere is a truncated image
    return buffer.getvalue()


def push_poison(url: str, queues: tuple[str, ...]) -> int:
    """Push every poison body onto each queue; returns how many were pushed."""
    from shared.core.broker import redis_client

    client = redis_client(url, socket_timeout=5)
    try:
        for queue in queues:
            for body in POISON_BODIES:
                client.lpush(queue, body)
    finally:
        client.close()
    return len(queues) * len(POISON_BODIES)


def dead_letters_total(url: str, key: str) -> int:
    from shared.core.broker import redis_client

    client = redis_client(url, socket_timeout=5)
    try:
        return int(client.get(key) or 0)
    finally:
        client.close()


def unauthenticated_successes(url: str) -> list[str]:
    """What a local neighbour without the password got to do: must be nothing."""
    import redis

    from shared.core.broker import redis_client

    parts = urlsplit(url)
    path = unquote(parts.path)
    done: list[str] = []
    tries = (
        ("no password", f"redis+socket://{path}"),
        ("a wrong password", f"redis+socket://:wrong-{parts.password or ''}@{path}"),
    )
    for who, attempt in tries:
        client = redis_client(attempt, socket_timeout=2, socket_connect_timeout=2)
        for name, command in (
            ("PING", lambda c: c.ping()),
            ("CONFIG SET dir", lambda c: c.config_set("dir", "/tmp")),
            ("LPUSH route", lambda c: c.lpush("route", "forged")),
            ("KEYS", lambda c: c.keys("*")),
        ):
            try:
                command(client)
            except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
                continue  # refused: as it must be
            except (redis.exceptions.ConnectionError, OSError):
                continue  # could not even connect (the socket is 0700)
            done.append(f"{who}: {name}")
        client.close()
    return done
