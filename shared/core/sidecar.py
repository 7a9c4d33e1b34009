"""The record of a captioned image: the hot folder's sidecar `.json`, and the same fields in a
shard's `{key}.json` member, so a consumer reads one layout whichever way kcap filed it."""

from __future__ import annotations

import time
from typing import Any

from shared.core.messages import Result
from shared.core.outcomes import Outcome


def caption_record(
    result: Result, *, image: str, outcome: Outcome, text: str, threshold: float | None, filed_by: str
) -> dict[str, Any]:
    """The record of a captioned (output or clip-failed) result. filed_by: the host or worker
    that filed it (the record's "router")."""
    return {
        "job_id": result.job_id,
        "source": result.rel_path,
        "image": image,
        "caption": result.caption,
        "text": text,
        "captions": result.captions,
        "truncated": result.truncated,
        "decoder": result.decoder or None,
        "entities": result.entities,
        "clip_score": result.score,  # the score compared with the threshold
        "clip_score_method": result.score_method or None,
        "clip_score_original": result.score_original,
        "clip_score_sentence_chunks": result.score_sentence_chunks,
        "clipscore": result.clipscore,
        "clip_slices": result.slices,
        "clip_chunks": result.chunks,
        "threshold": threshold,
        "clip_score_family": result.score_family or None,  # whose threshold routed it
        "outcome": outcome.value,
        "caption_model": result.caption_model,
        "caption_family": result.caption_family or None,
        "clip_model": result.clip_model if result.score is not None else None,
        "prompt": result.prompt,
        "width": result.width,
        "height": result.height,
        "content_sha256": result.content_sha256,
        "timings": result.timings,
        "worker": result.worker,
        "router": filed_by,
        "enqueued_at": result.enqueued_at,
        "routed_at": time.time(),
    }
