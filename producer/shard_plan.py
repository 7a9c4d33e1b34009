"""Dataset mode's planner: from a shard pattern and the done markers, the shard jobs to send.

One job per shard, or per chunk of `--chunk-size` samples where a shard's sample count is
cheap to know (Parquet metadata; a tar is one job, read to its end). A shard (or chunk)
whose marker has the same settings hash is skipped; one whose marker has another hash is
refused, with what to do, unless --overwrite.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import ConfigError
from shared.core.messages import CaptionOptions, ShardJob, shard_job_id
from shared.core.settings import Settings
from shared.core.thresholds import scorer_family_of
from shared.shards.markers import Decision, ShardDecision, decide, read_markers, settings_hash
from shared.shards.reading import count_samples
from shared.shards.refs import ShardRef
from shared.shards.sources import list_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardRequest:
    """What `kcap run --input-shards` / `kcap submit` was asked to do."""

    pattern: str
    output_url: str
    clip_failed_url: str | None
    captions_url: str
    shard_output: str = "full"
    chunk_size: int | None = None
    overwrite: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def destinations(self) -> list[str]:
        """The folders the workers write into."""
        copies = [self.output_url, self.clip_failed_url] if self.shard_output == "full" else []
        return [url for url in (*copies, self.captions_url) if url]


@dataclass(frozen=True)
class Plan:
    jobs: list[ShardJob]
    expected: dict[str, int | None]  # job id -> samples, when known
    skipped: list[str]  # chunk names done already with these settings
    refused: dict[str, ShardDecision]  # chunk names done with other settings (no --overwrite)


def request_settings_hash(settings: Settings, request: ShardRequest) -> str:
    """The hash of every setting that changes a shard's outputs: the caption options (prompts,
    decoding, cleanup, which score routes), the models, the threshold, the text around the
    caption and the output form. Not the batch size, the GPUs or the chunking."""
    scoring = request.clip_failed_url is not None
    return settings_hash(
        options=caption_options(settings, request),
        caption_model=settings.caption_model,
        clip_model=settings.clip_model if scoring else None,
        decoder=settings.decoder,
        threshold=settings.threshold if scoring else None,
        threshold_family=threshold_family(settings) if scoring else None,
        caption_prefix=settings.caption_prefix,
        caption_suffix=settings.caption_suffix,
        shard_output=request.shard_output,
    )


def caption_options(settings: Settings, request: ShardRequest) -> CaptionOptions:
    """The hot folder's options; scored when there is a clip-failed destination, as there."""
    return dataclasses.replace(settings.caption_options(), score=request.clip_failed_url is not None)


def threshold_family(settings: Settings) -> str:
    """The family --threshold is for, as the router picks it."""
    return settings.threshold_family or scorer_family_of(settings.clip_model)


def chunks_of(ref: ShardRef, count: int | None, chunk_size: int | None) -> list[tuple[str, int, int | None]]:
    """(chunk name, start, stop) for one shard: the whole shard unless it can be cut."""
    if not chunk_size or count is None or count <= chunk_size:
        return [(ref.name, 0, None)]
    return [
        (f"{ref.name}-{i:05d}", i * chunk_size, min(count, (i + 1) * chunk_size))
        for i in range(math.ceil(count / chunk_size))
    ]


def plan(settings: Settings, request: ShardRequest) -> Plan:
    """List the shards, read the markers, and make a job for every chunk still to do."""
    if request.chunk_size is not None and request.chunk_size < 1:
        raise ConfigError("--chunk-size must be at least 1 sample")
    options = request.storage_options or None
    refs = list_shards(request.pattern, storage_options=options)
    markers = read_markers(request.captions_url, storage_options=options)
    digest = request_settings_hash(settings, request)
    options_for_jobs = caption_options(settings, request)
    now = time.time()
    jobs: list[ShardJob] = []
    expected: dict[str, int | None] = {}
    skipped: list[str] = []
    refused: dict[str, ShardDecision] = {}
    for ref in refs:
        count = count_samples(ref, storage_options=options) if ref.kind == "parquet" else None
        if request.chunk_size and count is None and ref.kind == "tar":
            log.info("%s: a tar shard is one job (its sample count is not known before reading it)", ref.name)
        for name, start, stop in chunks_of(ref, count, request.chunk_size):
            decision = decide(name, markers, digest, overwrite=request.overwrite)
            if decision.action is Decision.SKIP:
                skipped.append(name)
                continue
            if decision.action is Decision.REFUSE:
                refused[name] = decision
                continue
            job = ShardJob(
                job_id=shard_job_id(ref.url, start, stop, digest),
                shard=ref.to_dict(),
                start=start,
                stop=stop,
                chunk=name,
                output_url=request.output_url,
                clip_failed_url=request.clip_failed_url,
                captions_url=request.captions_url,
                shard_output=request.shard_output,
                options=options_for_jobs,
                settings_hash=digest,
                enqueued_at=now,
                threshold=settings.threshold,
                threshold_family=threshold_family(settings),
                caption_prefix=settings.caption_prefix,
                caption_suffix=settings.caption_suffix,
                max_image_bytes=settings.max_file_bytes,
            )
            jobs.append(job)
            expected[job.job_id] = None if count is None else (stop if stop is not None else count) - start
    return Plan(jobs=jobs, expected=expected, skipped=skipped, refused=refused)
