"""Child processes that die with their parent (Linux), so no process is ever orphaned."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn for subprocess.Popen: the kernel sends signum to the child when the
    parent dies. None where the platform has no such thing."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
        except OSError:
            pass

    return arm
