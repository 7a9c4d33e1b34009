"""kcap's exit statuses, one table: what each means to a person, a supervisor and systemd."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    # Something failed that a restart may fix (a crash, the producer thread dying).
    FAILURE = 1
    # kcap stopped on an error it explained (a bad setting, a model it cannot load, --compile
    # on a host without a compiler): running it again would only repeat that, so kcap's own
    # supervisors do not restart it, and the systemd units list it in RestartPreventExitStatus.
    ERROR = 2
    INTERRUPTED = 130  # Ctrl-C
