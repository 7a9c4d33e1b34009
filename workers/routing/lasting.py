"""Destination failures that waiting does not mend, and how such a result is filed instead.

The route task retries an OSError (a full disk, a read-only or lost mount heal in time). A
name or path that the file system refuses outright never heals: retrying it would hold a slot
for ever and, with a few such files, jam the service. The router files it as an error at once.
"""

from __future__ import annotations

import dataclasses
import errno
import logging

from shared.core.messages import Result
from shared.core.naming import shown

log = logging.getLogger(__name__)

# Errors that waiting does not mend: the file system refuses the name or the path itself (too
# long, bytes or characters it does not take, a file where a folder must go). Such a result
# is filed as an error at once; any other OSError (a full disk, a read-only or lost mount)
# is retried by the route task.
LASTING_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.ELOOP, errno.ENOTDIR, errno.EISDIR}
)


def heals_by_waiting(exc: OSError) -> bool:
    return exc.errno not in LASTING_ERRNOS


def cannot_file(result: Result, exc: OSError) -> Result:
    """A result whose name or path the destination refuses for good, as an error."""
    reason = (
        f"the destination refuses its name or path ({exc.strerror or exc}: "
        f"{shown(str(exc.filename or result.rel_path))}); rename it, or move it to a shallower "
        "folder, and drop it in again"
    )
    log.error("job %s (%s): %s; filing it as an error", result.job_id, shown(result.rel_path), reason)
    return dataclasses.replace(result, ok=False, error_reason=reason, error_class="CannotFile")
