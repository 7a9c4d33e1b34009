"""Helpers for integration tests: dropping images, reading back where they landed."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from pathlib import Path

from kombu import Connection, Queue
from PIL import Image

from shared.core.broker import redis_client
from shared.core.messages import CaptionOptions, Job
from shared.core.naming import job_id_for
from shared.core.settings import Settings

__all__ = ["redis_client"]  # re-exported for the tests


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def large_jpegs(n: int, *, side: int = 1600, seed: int = 0) -> list[bytes]:
    """n distinct JPEGs of noise, several MB each: copying one takes long enough for a kill
    to land mid-copy. One encode, then a distinct comment segment (COM) in each, so making
    24 of them costs a fraction of a second."""
    noise = Image.frombytes(
        "RGB", (side, side), hashlib.shake_256(str(seed).encode()).digest(side * side * 3)
    )
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=95)
    body = buffer.getvalue()
    assert body[:2] == b"\xff\xd8"  # SOI; the comment goes right after it
    out = []
    for index in range(n):
        comment = f"kcap test image {seed}-{index}".encode()
        out.append(body[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + body[2:])
    return out


def job_for(data: bytes, options: CaptionOptions, rel: str = "x.png") -> Job:
    """The job the producer would send for these bytes at rel."""
    sha = hashlib.sha256(data).hexdigest()
    return Job(
        job_id=job_id_for(rel, sha),
        rel_path=rel,
        content_sha256=sha,
        size=len(data),
        mtime=0.0,
        image_b64=Job.encode_bytes(data),
        options=options,
        enqueued_at=0.0,
    )


def drop_images(settings: Settings, n: int, *, seed: int, prefix: str = "f") -> list[str]:
    """n distinct PNGs named <prefix>NN.png in the input folder; their sorted names."""
    from workers.tiny.images import tiny_images

    assert settings.input_dir is not None
    names = []
    for i, image in enumerate(tiny_images(n, seed=seed)):
        name = f"{prefix}{i:02d}.png"
        (settings.input_dir / name).write_bytes(image_bytes(image))
        names.append(name)
    return sorted(names)


def write_slowly(path: Path, data: bytes, *, chunks: int = 5, pause_s: float = 0.25) -> None:
    """A copy in progress: the file grows in chunks, so only a stability gate saves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    step = max(1, len(data) // chunks)
    with path.open("wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(pause_s)


def records(settings: Settings) -> dict[str, list[dict[str, object]]]:
    """Every routed record, by root: output and clip_failed `.json`, errors `.error.json`."""
    found: dict[str, list[dict[str, object]]] = {"output": [], "clip_failed": [], "errors": []}
    roots = {
        "output": settings.output_dir,
        "clip_failed": settings.clip_failed_dir,
        "errors": settings.errors_dir,
    }
    for name, root in roots.items():
        if root is None or not root.exists():
            continue
        pattern = "*.error.json" if name == "errors" else "*.json"
        for path in sorted(root.rglob(pattern)):
            if path.name.startswith(".") or (name != "errors" and path.name.endswith(".error.json")):
                continue
            data = json.loads(path.read_text())
            data["_path"] = str(path)
            found[name].append(data)
    return found


def routed_sources(settings: Settings) -> list[str]:
    return sorted(str(r["source"]) for group in records(settings).values() for r in group)


def publish_raw(url: str, queue: str, body: str, *, task: str, **headers: object) -> str:
    """Put one message on a queue the way a hostile client would: a well-formed kombu
    envelope whose JSON body (and headers) are whatever the caller says. Returns its id."""
    task_id = str(uuid.uuid4())
    with Connection(url) as connection:
        connection.Producer().publish(
            body,
            routing_key=queue,
            headers={"lang": "py", "task": task, "id": task_id, **headers},
            content_type="application/json",
            content_encoding="utf-8",
            declare=[Queue(queue)],
            retry=True,
        )
    return task_id


def children(pid: int) -> list[int]:
    """The direct child processes of pid."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
