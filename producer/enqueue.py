"""Turning a stable file into one job on the caption queue, once, under the in-flight cap."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis

from producer.scan import find_done, find_done_by_stat
from shared.core.blobs import INLINE_MAX_BYTES, Blobs
from shared.core.errors import UnsafePathError
from shared.core.inflight import InFlight
from shared.core.messages import Job, Result
from shared.core.naming import (
    PATH_MAX,
    inside,
    job_id_for,
    links_outside,
    name_bytes,
    path_too_long,
    sha256_file,
    sidecar_name_refusal,
)
from shared.core.publisher import Publisher
from shared.core.settings import Settings

log = logging.getLogger(__name__)


class _TooLong(Exception):
    """A path over PATH_MAX: refused without a look at it."""


class Offer(StrEnum):
    """What offering one candidate file did."""

    QUEUED = "queued"  # a job was sent
    DONE = "done"  # already routed (its record exists): nothing to do
    IN_FLIGHT = "in_flight"  # already claimed by a job not yet routed
    VANISHED = "vanished"  # deleted before it was read
    REFUSED = "refused"  # sent straight to errors with a reason (a link out, too large, unreadable)
    NO_ROOM = "no_room"  # not sent: the in-flight cap is full (only when the caller would not wait)


@dataclass(frozen=True)
class Enqueued:
    """What happened to one candidate file."""

    status: Offer
    job_id: str = ""


class Enqueuer:
    """Reads, hashes and publishes one job per image; waits while too many are in flight."""

    def __init__(
        self, settings: Settings, publisher: Publisher, inflight: InFlight, *, blobs: Blobs | None = None
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.inflight = inflight
        self.blobs = blobs  # None: every image inline in its message
        self.root, _ = settings.require_folders()
        self.options = settings.caption_options()
        self._unsent: set[str] = set()  # claimed by us, publish failed

    def offer(self, path: Path, rel_path: str, *, wait: bool = True) -> Enqueued:
        """Enqueue path unless it is done or already in flight.

        A new claim waits for room under --max-in-flight; with wait=False it is not made
        when there is none (status no_room).
        """
        mtime = 0.0
        try:
            if path_too_long(path):
                raise _TooLong
            stat = os.stat(path)
            mtime = stat.st_mtime
            if not path.is_symlink() and find_done_by_stat(
                self.settings, rel_path, stat.st_size, stat.st_mtime_ns
            ):
                return Enqueued(Offer.DONE)  # routed before, unchanged since: not even read
            refusal = self._refusal(path, stat.st_size)
            data = b"" if refusal else _read_capped(path, self.settings.max_file_bytes)
            if data is None:  # grew past the cap after the stat
                refusal = self._size_refusal(self.settings.max_file_bytes + 1)
                data = b""
            # A refused link is never read (its target is left alone); any other refused file
            # is hashed as it is, so the router's copy into errors can verify it.
            sha = hashlib.sha256(data).hexdigest() if not refusal else self._refused_hash(path, rel_path)
        except FileNotFoundError:
            log.info("%s vanished before it was read; nothing to do", rel_path)
            return Enqueued(Offer.VANISHED)
        except _TooLong:
            refusal = (
                f"its path is {len(name_bytes(str(path)))} bytes, over the {PATH_MAX}-byte limit of "
                "a path (PATH_MAX), so no program can open it by its path; move it to a shallower "
                "folder and it is captioned"
            )
            data = b""
            sha = _identity_hash(rel_path, path)
        except OSError as exc:
            refusal = f"cannot read the file: {exc}"
            data = b""
            sha = _identity_hash(rel_path, path)
        job_id = job_id_for(rel_path, sha)
        # A cheap early look, so that a restart over a done backlog never waits for room.
        if find_done(self.settings, rel_path, sha, job_id) is not None:
            self.inflight.discard(job_id)  # a claim leaked by a crash would block a slot forever
            return Enqueued(Offer.DONE, job_id)
        age = self.inflight.age(job_id)
        if age is None:  # only a new claim needs room: a claimed job already holds its slot
            if wait:
                self._wait_for_room(len(data))
            elif not self._has_room(len(data)):
                return Enqueued(Offer.NO_ROOM, job_id)
            if not self.inflight.try_add(job_id, rel_path, size=len(data)):
                age = self.inflight.age(job_id) or 0.0  # claimed meanwhile (a duplicate event)
        if age is not None and job_id not in self._unsent:
            if age < self.settings.stale_claim_s:
                return Enqueued(Offer.IN_FLIGHT, job_id)
            # Claimed long ago and still not routed: its message was lost (a publish that
            # failed, a Redis that kept nothing). Sending it again is safe: routing is idempotent.
            log.warning(
                "job %s (%s): claimed %.0fs ago and never routed; sending it again", job_id, rel_path, age
            )
            self.inflight.refresh(job_id)
        # Claim, then look again: the route task writes the record before it frees the claim,
        # so a job that finished while we waited for room is seen here and not sent twice.
        if find_done(self.settings, rel_path, sha, job_id) is not None:
            self.inflight.discard(job_id)
            return Enqueued(Offer.DONE, job_id)
        try:
            sent = self._send(job_id, rel_path, sha, data, mtime if refusal == "" else 0.0, refusal)
        except BaseException:
            # Not sent (Redis down): our claim may outlive this attempt in the append-only
            # file, so remember that it is ours and send it when the file comes round again.
            self._unsent.add(job_id)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                self.inflight.discard(job_id)
            raise
        self._unsent.discard(job_id)
        return sent

    def _send(
        self, job_id: str, rel_path: str, sha: str, data: bytes, mtime: float, refusal: str
    ) -> Enqueued:
        if refusal:
            log.warning("%s refused: %s", rel_path, refusal)
            self._send_refusal(job_id, rel_path, sha, refusal)
            return Enqueued(Offer.REFUSED, job_id)
        stored = False
        if self.blobs is not None and len(data) > INLINE_MAX_BYTES:
            self.blobs.put(job_id, data)  # before the message: a worker must find it
            stored = True
        self.publisher.send_job(
            Job(
                job_id=job_id,
                rel_path=rel_path,
                content_sha256=sha,
                size=len(data),
                mtime=mtime,
                image_b64="" if stored else Job.encode_bytes(data),
                options=self.options,
                enqueued_at=time.time(),
                image_stored=stored,
            )
        )
        return Enqueued(Offer.QUEUED, job_id)

    def _refusal(self, path: Path, size: int) -> str:
        sidecar = sidecar_name_refusal(path.name, caption_ext=self.settings.caption_ext)
        if sidecar:
            return sidecar
        if self._links_outside(path):
            return (
                f"symlink to {os.path.realpath(path)}, outside the input folder "
                "(pass --follow-symlinks or set KCAP_FOLLOW_SYMLINKS=1 to allow)"
            )
        if size > self.settings.max_file_bytes:
            return self._size_refusal(size)
        return ""

    def _links_outside(self, path: Path) -> bool:
        return links_outside(path, self.root, follow_symlinks=self.settings.follow_symlinks)

    def _size_refusal(self, size: int) -> str:
        return (
            f"file is {size} bytes, over the cap of {self.settings.max_file_bytes} "
            "(raise KCAP_MAX_FILE_BYTES to accept it)"
        )

    def _refused_hash(self, path: Path, rel_path: str) -> str:
        if self._links_outside(path):
            return _identity_hash(rel_path, path)
        return sha256_file(path)

    def _send_refusal(self, job_id: str, rel_path: str, sha: str, reason: str) -> None:
        result = Result(
            job_id=job_id,
            rel_path=rel_path,
            content_sha256=sha,
            ok=False,
            error_reason=reason,
            error_class="Refused",
            worker="producer",
            enqueued_at=time.time(),
        )
        self.publisher.send_result(result, queue=self.settings.route_queue)

    def _has_room(self, size: int) -> bool:
        """Room under both caps: --max-in-flight jobs and --max-in-flight-bytes of images.

        A file larger than the byte cap goes alone, once nothing else is in flight.
        """
        jobs, held = self.inflight.usage()
        if jobs >= self.settings.max_in_flight:
            return False
        return held == 0 or held + size <= self.settings.max_in_flight_bytes

    def _wait_for_room(self, size: int) -> None:
        """Back-pressure: a backlog of a million files never floods Redis, in count or bytes.

        Lost jobs hold slots that nothing else frees: while waiting, every claim older than
        --stale-claim-s is sent again from its file, so a cap full of lost jobs drains.
        """
        delay = 0.05
        while not self._has_room(size):
            self._resend_stale()
            if self._has_room(size):
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _resend_stale(self) -> None:
        """Send every stale claim's job again, or free its slot when it cannot be sent."""
        for job_id, rel_path in self.inflight.stale(self.settings.stale_claim_s):
            sent = Enqueued(Offer.VANISHED)  # no path on record: nothing to read it from
            if rel_path is not None:
                try:
                    sent = self.offer(inside(self.root, rel_path), rel_path, wait=False)
                except UnsafePathError as exc:
                    log.warning("job %s: its claim names a path outside the input folder: %s", job_id, exc)
            if sent.job_id != job_id:
                # The file is gone, changed (new bytes are a new job) or unknown: nothing can
                # send this job again, and its slot must not stay taken for ever.
                log.warning(
                    "job %s (%s): claimed long ago, never routed, and its input no longer holds "
                    "its bytes (%s); freeing its slot",
                    job_id,
                    rel_path,
                    sent.status,
                )
                self.inflight.discard(job_id)


def _read_capped(path: Path, cap: int) -> bytes | None:
    """The file's bytes, or None when it holds more than cap (it may grow after a stat)."""
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    return None if len(data) > cap else data


def _identity_hash(rel_path: str, path: Path) -> str:
    """A stand-in content hash for a file that is refused without being read."""
    try:
        stat = os.lstat(path)
        token = f"{rel_path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    except OSError:
        token = rel_path
    return hashlib.sha256(name_bytes(token)).hexdigest()
