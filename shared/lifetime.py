"""Child processes that die with their parent (Linux), so no process is ever orphaned."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn for subprocess.Popen, where the platform has one."""
    return _die_with_parent if sys.platform.startswith("linux") else None
