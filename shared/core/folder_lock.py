"""One kcap at a time on a folder: an flock'ed `.kcap.lock` in the state folder and in each
folder the route worker files into.

Two `kcap up`s on one state folder start two Redis servers on one socket and append-only file;
two route workers on one output folder file each result twice. flock gives what a PID file
cannot: the kernel drops a lock with the last descriptor of its holder, so a holder killed
with SIGKILL never blocks the next start, and a stale file blocks nothing. flock works across
hosts on NFS (Linux emulates it with POSIX locks there), so a route worker on another host
that mounts the same folder is refused too. The file holds who has it (PID, host, command),
for the message only: the lock, not the text, decides.

The holder's children (the route worker that `kcap up` starts, the route worker process under
`kcap router`) find the lock taken and the holder named in HOLDER_ENV: it is theirs, they
live and die with it (shared.core.parent_death), and they go on without a lock of their own.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from shared.core.errors import FolderInUseError
from shared.core.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = ".kcap.lock"
# The PID of the kcap process that holds this process's folder locks, set for its children.
HOLDER_ENV = "KCAP_FOLDER_LOCK_HOLDER"
# A folder that cannot hold a lock file (read-only) is not refused for it: filing there
# fails and is retried until it is writable, which a lock would not change.
_CANNOT_CREATE = (errno.EROFS, errno.EACCES, errno.EPERM)
STATE_ROLE = "state folder"


class FolderLocks:
    """The locks one kcap process holds, released together (or when the process ends)."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._env_before: str | None = None
        self._set_env = False

    def take(self, role: str, folder: Path, *, command: str) -> None:
        # The state folder holds the broker's password: only its owner may enter (see make_folders).
        folder.mkdir(mode=0o700 if role == STATE_ROLE else 0o777, parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        fd = _open(path)
        if fd is None:
            log.warning(
                "cannot create %s (read-only?): the %s is not locked against a second kcap", path, role
            )
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if _is_our_holder(holder):
                return
            raise FolderInUseError(_refusal(role, folder, holder, command)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fds.append(fd)
        who = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(who) + "\n").encode(), 0)
        except OSError as exc:  # a read-only descriptor: the lock holds, the name is unknown
            log.debug("cannot write who holds %s: %s", path, exc)

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # closing drops the flock; the file stays (removing it would race)
        if self._set_env:
            self._set_env = False
            if self._env_before is None:
                os.environ.pop(HOLDER_ENV, None)
            else:
                os.environ[HOLDER_ENV] = self._env_before

    def announce(self) -> None:
        """Name this process as the holder for the children it starts (they copy os.environ)."""
        if self._fds and not self._set_env:
            self._env_before = os.environ.get(HOLDER_ENV)
            os.environ[HOLDER_ENV] = str(os.getpid())
            self._set_env = True

    def __enter__(self) -> FolderLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_folders(settings: Settings, *, command: str, state: bool) -> FolderLocks:
    """Lock the route worker's folders, and the state folder when state (`kcap up`, `kcap run`:
    it holds their Redis, its broker_url and their logs), for this process's life or until
    release(). Raises FolderInUseError, naming the holder, when another kcap has one."""
    named: list[tuple[str, Path | None]] = [(STATE_ROLE, settings.state_dir)] if state else []
    named += [
        ("output folder", settings.output_dir),
        ("clip-failed folder", settings.clip_failed_dir),
        ("errors folder", settings.errors_dir),
    ]
    locks = FolderLocks()
    taken: set[Path] = set()
    try:
        for role, folder in named:
            # One lock a folder: a second descriptor on the same file would conflict with the first.
            if folder is not None and folder not in taken:
                taken.add(folder)
                locks.take(role, folder, command=command)
    except BaseException:
        locks.release()
        raise
    locks.announce()
    return locks


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno not in _CANNOT_CREATE:
            raise
    try:  # flock needs no write access: an existing file still locks
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None


def _holder(fd: int) -> dict[str, object] | None:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        who = json.loads(text)
    except (OSError, ValueError):
        return None  # the holder has the lock and has not written its name yet
    return who if isinstance(who, dict) else None


def _is_our_holder(holder: dict[str, object] | None) -> bool:
    """The lock is held by the process that started this one (its PID is in HOLDER_ENV)."""
    named = os.environ.get(HOLDER_ENV)
    return (
        holder is not None
        and named is not None
        and str(holder.get("pid")) == named
        and holder.get("host") == socket.gethostname()
    )


def _refusal(role: str, folder: Path, holder: dict[str, object] | None, command: str) -> str:
    if holder is None:
        who = "another kcap (it has not written its PID yet)"
        stop = "stop it first"
    else:
        pid, host = holder.get("pid"), holder.get("host")
        who = f"`{holder.get('command', 'kcap')}` (PID {pid} on host {host})"
        stop = f"stop it first (kill {pid})" if host == socket.gethostname() else f"stop it on {host} first"
    if role == STATE_ROLE:
        harm, flags = "would start a second Redis on its socket and append-only file", "--state-dir"
    else:
        harm, flags = "would file results twice", "--output-dir, --clip-failed-dir, --errors-dir"
    return (
        f"the {role} {folder} is in use by {who}: a second `{command}` on it {harm}; "
        f"{stop}, or give this one folders of its own ({flags})"
    )
