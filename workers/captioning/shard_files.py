"""Filing a shard job's samples, the route worker's work in shard form.

Each sample's result gets its outcome from the same threshold rule as the router
(shared.core.thresholds.outcome_for) and the same record as the hot folder's sidecar
(shared.core.sidecar.caption_record), and lands in exactly one of OUT/{chunk}.tar or
FAILED/{chunk}.tar (with `--shard-output full`), and always as one row of
CAPTIONS/{chunk}.parquet, errors included. Nothing is visible under a final name until
commit(); an exception aborts every writer (shared.shards.writing).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from contextlib import ExitStack
from typing import Any

from shared.core.errors import ShardWriteError
from shared.core.messages import Result, ShardJob
from shared.core.outcomes import Outcome
from shared.core.scoring import ScorerFamily
from shared.core.sidecar import caption_record
from shared.core.thresholds import Thresholds, outcome_for
from shared.shards.markers import marker_url
from shared.shards.refs import Sample
from shared.shards.staging import remove_stale
from shared.shards.storage import join_url
from shared.shards.writing import CaptionsParquetWriter, TarShardWriter

log = logging.getLogger(__name__)


class ShardFiler:
    """The writers of one shard job, and the counts of what went where."""

    def __init__(self, job: ShardJob, *, worker: str, storage_options: dict[str, Any] | None) -> None:
        self.job = job
        self.worker = worker
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # error samples by class, for the marker
        # The planner sends the family as the router would pick it (the storage host's view).
        self.thresholds = Thresholds(job.threshold, given_for=job.threshold_family or ScorerFamily.CLIP.value)
        self._stack = ExitStack()
        options = storage_options or None
        for url in self.final_urls():
            remove_stale(url, storage_options=options)
        self.captions = self._stack.enter_context(
            CaptionsParquetWriter(join_url(job.captions_url, f"{job.chunk}.parquet"), storage_options=options)
        )
        self.tars: dict[Outcome, TarShardWriter] = {}
        if job.shard_output == "full":
            destinations = {Outcome.OUTPUT: job.output_url, Outcome.CLIP_FAILED: job.clip_failed_url}
            for outcome, root in destinations.items():
                if root is not None:
                    writer = TarShardWriter(join_url(root, f"{job.chunk}.tar"), storage_options=options)
                    self.tars[outcome] = self._stack.enter_context(writer)

    def final_urls(self) -> list[str]:
        """Everything this job puts in place, its marker included."""
        job = self.job
        urls = [join_url(job.captions_url, f"{job.chunk}.parquet"), marker_url(job.captions_url, job.chunk)]
        if job.shard_output == "full":
            urls += [
                join_url(root, f"{job.chunk}.tar") for root in (job.output_url, job.clip_failed_url) if root
            ]
        return urls

    @property
    def outputs(self) -> dict[str, str]:
        """The URLs this job writes, by role, for the marker."""
        urls = {"captions": self.captions.url}
        urls.update({outcome.value: tar.url for outcome, tar in self.tars.items()})
        return urls

    def file(self, sample: Sample, result: Result) -> Outcome:
        """Put one sample's result in its place; returns where it went."""
        threshold = self.thresholds.applied(result, scoring=self.job.options.score)
        outcome = outcome_for(ok=result.ok, score=result.score, threshold=threshold)
        text = f"{self.job.caption_prefix}{result.caption}{self.job.caption_suffix}" if result.ok else ""
        if outcome is not Outcome.ERRORS:
            record = caption_record(
                result,
                image=f"{sample.key}.{sample.image_ext}",
                outcome=outcome,
                text=text,
                threshold=threshold,
                filed_by=self.worker,
            )
            record.update(key=sample.key, source_shard=self.job.url)
            tar = self.tars.get(outcome)
            try:
                if tar is not None:
                    tar.add(sample.key, sample.image_ext, sample.image, text, record)
            except ShardWriteError as exc:  # a key or extension a tar cannot hold: refused, not added
                result = dataclasses.replace(result, ok=False, error_reason=str(exc), error_class="Refused")
                outcome, text = Outcome.ERRORS, ""
        if outcome is Outcome.ERRORS:
            self.errors[result.error_class or "Error"] += 1
        self.captions.add(self.row(sample, result, outcome, text, threshold))
        self.counts[outcome.value] += 1
        return outcome

    def row(
        self, sample: Sample, result: Result, outcome: Outcome, text: str, threshold: float | None
    ) -> dict[str, Any]:
        """The sample's Parquet row (shared.shards' schema): the record's fields, flat."""
        return {
            "key": sample.key,
            "source_shard": self.job.url,
            "member": sample.member,
            "caption": result.caption,
            "text": text,
            "entities": json.dumps(result.entities, ensure_ascii=False),
            "clip_score": result.score,
            "clip_score_method": result.score_method or None,
            "clip_score_original": result.score_original,
            "clip_score_sentence_chunks": result.score_sentence_chunks,
            "clipscore": result.clipscore,
            "threshold": threshold,
            "outcome": outcome.value,
            "caption_model": result.caption_model or None,
            "clip_model": (result.clip_model if result.score is not None else None) or None,
            "prompt": result.prompt or None,
            "decoder": result.decoder or None,
            "width": result.width or None,
            "height": result.height or None,
            "content_sha256": result.content_sha256,
            "error_reason": result.error_reason or None,
            "error_class": result.error_class or None,
            "worker": result.worker or self.worker,
        }

    def commit(self) -> None:
        """Put every output in place: the tars first, the Parquet (which lists them all) last."""
        for tar in self.tars.values():
            tar.commit()
        self.captions.commit()
        self._stack.close()

    def abort(self) -> None:
        """Remove every temporary; nothing is left under a final name."""
        for tar in self.tars.values():
            tar.abort()
        self.captions.abort()
        self._stack.close()
