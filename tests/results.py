"""A route result for given bytes, as the caption side makes one: its id from the path and the
content hash (naming.job_id_for), so the router finds the input it names."""

from __future__ import annotations

import hashlib
from typing import Any

from shared.core.messages import Result
from shared.core.naming import job_id_for


def result_for(rel_path: str, data: bytes, **fields: Any) -> Result:
    sha = hashlib.sha256(data).hexdigest()
    return Result(job_id=job_id_for(rel_path, sha), rel_path=rel_path, content_sha256=sha, **fields)
