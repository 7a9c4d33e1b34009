"""Job and result messages: frozen dataclasses that travel as JSON (never pickle).

A job carries the image bytes and its CaptionOptions (how to caption and score, set once by
the storage host's settings); a result carries what the GPU side made of it. Both are
refused on decode when a field is unknown, missing or of the wrong shape, with the raw
payload kept on the error for the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

from shared.core.errors import DecodeError
from shared.core.records import json_text
from shared.core.scoring import SCORE_METHODS, ScoreMethod

T = TypeVar("T", bound="_Message")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_JOB_ID = re.compile(r"[0-9a-f]{8,64}")

# 2: a job's caption options travel as one nested object ("options").
# 3: the original script's score routes by default (options.route_score); a result carries
#    both scores, so a worker and a router of different versions refuse each other's messages.
# 4: a result names its caption and scorer families, and its score_method may be a sigmoid
#    family's own statistic ("sigmoid"); thresholds are per scorer family. A job's image may
#    be stored beside the message (image_stored, shared.core.blobs); a result says which
#    decoder wrote its caption (decoder).
SCHEMA_VERSION = 4


def _check_ids(message: object, job_id: str, content_sha256: str) -> None:
    """Ids end up in file names: anything but lowercase hex is refused, never used."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise DecodeError(f"{type(message).__name__}: job_id must be lowercase hex", payload=job_id)
    if not isinstance(content_sha256, str) or not _HEX64.fullmatch(content_sha256):
        raise DecodeError(
            f"{type(message).__name__}: content_sha256 must be 64 lowercase hex digits",
            payload=content_sha256,
        )


class _Message:
    """encode()/decode() for the dataclasses below; unknown keys are refused, not ignored."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["kind"] = self.kind
        data["schema"] = SCHEMA_VERSION
        return data

    def encode(self) -> str:
        return json_text(self.to_dict(), separators=(",", ":"))

    @classmethod
    def _convert(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Turn nested JSON values into the field types; a hook for subclasses."""
        return body

    @classmethod
    def from_dict(cls: type[T], data: object) -> T:
        if not isinstance(data, dict):
            raise DecodeError(f"{cls.__name__}: expected a JSON object", payload=data)
        body = dict(data)
        if body.pop("kind", cls.kind) != cls.kind:
            raise DecodeError(f"{cls.__name__}: wrong message kind {data.get('kind')!r}", payload=data)
        if body.pop("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise DecodeError(f"{cls.__name__}: unsupported schema {data.get('schema')!r}", payload=data)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(body) - names
        if unknown:
            raise DecodeError(f"{cls.__name__}: unknown fields {sorted(unknown)}", payload=data)
        try:
            return cls(**cls._convert(body))
        except DecodeError as exc:
            raise DecodeError(str(exc), payload=data) from exc
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{cls.__name__}: {exc}", payload=data) from exc

    @classmethod
    def decode(cls: type[T], raw: str | bytes) -> T:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"{cls.__name__}: not JSON: {exc}", payload=raw) from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class CaptionOptions(_Message):
    """How a job's image is captioned and scored; the one place these options are listed.

    Jobs whose options differ only in their prompts still batch together per prompt: the
    batch key is ``for_prompt(prompt)``, these options with that one prompt.
    """

    kind: ClassVar[str] = "caption_options"
    prompts: tuple[str, ...]  # several: each is captioned and scored, the best score routes
    max_new_tokens: int = 128
    num_beams: int = 1  # 1: greedy, as in the original script
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    score: bool = False  # only when the storage host has a clip-failed folder
    # Caption cleanup: none by default, so the caption is what the original script wrote.
    strip_openings: tuple[str, ...] = ()
    collapse_whitespace: bool = False
    trim_partial: bool = False
    route_score: str = ScoreMethod.ORIGINAL.value  # which CLIP score is compared with the threshold

    def __post_init__(self) -> None:
        # JSON brings lists; the options are a hashable batch key, so they hold tuples.
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "strip_openings", tuple(self.strip_openings))
        if not self.prompts or not all(isinstance(p, str) and p for p in self.prompts):
            raise DecodeError("CaptionOptions: prompts must be non-empty strings", payload=self.prompts)
        if self.route_score not in SCORE_METHODS:
            raise DecodeError(
                f"CaptionOptions: route_score must be one of {', '.join(SCORE_METHODS)}",
                payload=self.route_score,
            )

    @property
    def prompt(self) -> str:
        """The first prompt; a batch key holds exactly one."""
        return self.prompts[0]

    def for_prompt(self, prompt: str) -> CaptionOptions:
        return replace(self, prompts=(prompt,))

    def generate_kwargs(self) -> dict[str, Any]:
        """The decoding options, as keyword arguments of Captioner.forward."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }


class _WithOptions(_Message):
    """A job message: its CaptionOptions travel as one nested object ("options")."""

    options: CaptionOptions

    @classmethod
    def _convert(cls, body: dict[str, Any]) -> dict[str, Any]:
        if "options" in body:
            body["options"] = CaptionOptions.from_dict(body["options"])
        return body

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["options"] = self.options.to_dict()
        return data


@dataclass(frozen=True)
class Job(_WithOptions):
    """One image to caption. It carries the bytes, so GPU hosts need no shared filesystem."""

    kind: ClassVar[str] = "job"
    job_id: str
    # POSIX path relative to the input root, as Python holds file names (PEP 383): its bytes
    # decoded as UTF-8, a byte that is not UTF-8 as a lone surrogate U+DC80..U+DCFF. JSON
    # carries such a surrogate as a \udcNN escape (Celery's JSON and encode() both write
    # it so), and naming.name_bytes gives the very bytes back.
    rel_path: str
    content_sha256: str
    size: int
    mtime: float
    image_b64: str  # "" when the image is stored beside the message
    options: CaptionOptions
    enqueued_at: float
    # True: the bytes are in Redis under the job's blob key (shared.core.blobs), not inline.
    image_stored: bool = False

    def __post_init__(self) -> None:
        _check_ids(self, self.job_id, self.content_sha256)
        if not isinstance(self.options, CaptionOptions):
            raise DecodeError("Job: options must be caption options", payload=self.options)
        if self.image_stored and self.image_b64:
            raise DecodeError("Job: an image is either inline or stored, not both", payload=self.job_id)

    def image_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.image_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"job {self.job_id}: image_b64 is not base64", payload=self.job_id) from exc

    @staticmethod
    def encode_bytes(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Entity(_Message):
    """A grounded phrase from Kosmos-2: its character span in the caption and its boxes."""

    kind: ClassVar[str] = "entity"
    phrase: str
    start: int = 0
    end: int = 0
    # Normalised (x0, y0, x1, y1) in [0, 1] of the (EXIF-upright) original image.
    boxes: list[list[float]] = field(default_factory=list)
    # The same boxes in pixels of that image.
    boxes_px: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class Result(_Message):
    """What the GPU side (or the producer, for a refused file) tells the route task."""

    kind: ClassVar[str] = "result"
    job_id: str
    rel_path: str  # as in Job
    content_sha256: str
    ok: bool
    caption: str = ""
    entities: list[dict[str, Any]] = field(default_factory=list)
    # The score that routes: compared with the threshold. score_method says which it is.
    score: float | None = None
    score_method: str = ""  # a shared.core.scoring.Statistic
    # Both scores (shared.core.scoring.ScoreMethod): the original script's, over `slices`
    # 77-character slices, and kcap's, over `chunks` sentence-packed token chunks.
    score_original: float | None = None
    score_sentence_chunks: float | None = None
    clipscore: float | None = None  # 2.5 x max(mean cosine over the sentence chunks, 0), Hessel et al.
    slices: int = 0
    chunks: int = 0
    caption_model: str = ""
    clip_model: str = ""
    caption_family: str = ""  # workers.captioning.families: "kosmos-2", "florence-2", ...
    score_family: str = ""  # the scorer family (ScorerFamily) whose threshold routes the score
    prompt: str = ""  # the prompt in the caption family's own form, as it was sent
    width: int = 0
    height: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    # Every prompt's caption when several were asked for: prompt, caption, entities, scores.
    captions: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False  # the token limit cut the caption short
    decoder: str = ""  # shared.core.decoding.Decoder: what wrote the caption
    # Only when ok is False.
    error_reason: str = ""
    error_class: str = ""
    enqueued_at: float = 0.0

    def __post_init__(self) -> None:
        _check_ids(self, self.job_id, self.content_sha256)


SHARD_OUTPUTS = ("full", "captions")


@dataclass(frozen=True)
class ShardJob(_WithOptions):
    """One shard, or one chunk of it, to caption: a reference, never image bytes.

    The caption worker opens the shard itself (shared.shards), so a message stays a few
    hundred bytes whatever the images weigh. It also carries what the worker needs to file
    each sample itself, as the route worker would: the destinations, the threshold rule's
    inputs and the caption's prefix and suffix.
    """

    kind: ClassVar[str] = "shard_job"
    job_id: str  # stable: shard_job_id(url, start, stop, settings_hash)
    shard: dict[str, Any]  # shared.shards' ShardRef, as its to_dict()
    start: int
    stop: int | None  # None: to the end of the shard
    chunk: str  # the output stem: the shard's name, or name-NNNNN for a chunk
    output_url: str
    clip_failed_url: str | None  # None: no scoring, as the hot folder without a clip-failed folder
    captions_url: str
    shard_output: str  # "full": tars and Parquet; "captions": the Parquet alone
    options: CaptionOptions
    settings_hash: str
    enqueued_at: float
    threshold: float | None = None  # None: the scorer family's default (shared.core.thresholds)
    threshold_family: str = ""  # the family `threshold` is for
    caption_prefix: str = ""
    caption_suffix: str = ""
    max_image_bytes: int = 64 * 1024 * 1024
    # No storage options: credentials never travel in a message; each worker takes its own
    # from its environment (AWS_*, KCAP_STORAGE_OPTIONS).

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not _JOB_ID.fullmatch(self.job_id):
            raise DecodeError("ShardJob: job_id must be lowercase hex", payload=self.job_id)
        if not isinstance(self.options, CaptionOptions):
            raise DecodeError("ShardJob: options must be caption options", payload=self.options)
        if self.shard_output not in SHARD_OUTPUTS:
            raise DecodeError(
                f"ShardJob: shard_output must be one of {', '.join(SHARD_OUTPUTS)}", payload=self.shard_output
            )
        if not isinstance(self.shard, dict) or not isinstance(self.shard.get("url"), str):
            raise DecodeError("ShardJob: shard must be a shard reference with a url", payload=self.shard)
        if (
            not isinstance(self.start, int)
            or self.start < 0
            or (self.stop is not None and self.stop < self.start)
        ):
            raise DecodeError("ShardJob: start and stop must be a range of indices", payload=self.start)
        if not self.chunk or "/" in self.chunk or self.chunk.startswith("."):
            raise DecodeError("ShardJob: chunk must be a plain file stem", payload=self.chunk)

    @property
    def url(self) -> str:
        return str(self.shard["url"])


def shard_job_id(url: str, start: int, stop: int | None, settings_hash: str) -> str:
    """A shard job's id: the same shard range under the same settings is the same job."""
    text = json.dumps([url, start, stop, settings_hash], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
