"""Sweeping kcap's own left-overs out of the dataset folders.

Every file kcap writes goes through a temp file beside its target (`.kcap-tmp-*`), renamed
into place once complete. A route worker killed mid-write leaves its temp file behind, and
kcap before 0.4 renamed a copy whose input changed meanwhile to `.kcap-stale-*`. Neither is
part of the dataset and neither is the only copy of anything: the input is still in the
input folder. A temp file is only taken once it has not been written to for `older_than_s`,
so a copy in progress on another route host sharing the folder is never touched.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from shared.core.naming import STALE_PREFIX, TEMP_PREFIX

log = logging.getLogger(__name__)

# A write in progress touches its temp file at least every few seconds (1 MiB blocks).
DEFAULT_OLDER_THAN_S = 600.0


def sweep_leftovers(
    roots: Iterable[Path | None], *, older_than_s: float = DEFAULT_OLDER_THAN_S
) -> list[Path]:
    """Remove kcap's abandoned temp and set-aside files under roots; returns what was removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    for root in {r for r in roots if r is not None}:
        for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
            for name in filenames:
                if not name.startswith((TEMP_PREFIX, STALE_PREFIX)):
                    continue
                path = Path(dirpath) / name
                try:
                    if os.lstat(path).st_mtime > cutoff:
                        continue  # possibly a write in progress
                    path.unlink()
                except FileNotFoundError:
                    continue  # its writer finished or another sweep took it
                except OSError as exc:
                    log.warning("cannot remove kcap's left-over %s: %s", path, exc)
                    continue
                removed.append(path)
    if removed:
        log.info(
            "removed %d left-over temp file(s) of kcap's: %s", len(removed), ", ".join(map(str, removed[:5]))
        )
    return removed
