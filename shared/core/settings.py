"""kcap's settings: one frozen dataclass, built in one place from KCAP_* variables and flags.

Precedence: command-line flag > environment (KCAP_<FIELD>) > default.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from shared.core.decoding import DECODER_CHOICES
from shared.core.errors import ConfigError
from shared.core.keys import Keys, keys_for
from shared.core.messages import CaptionOptions
from shared.core.prompts import resolve_prompts
from shared.core.redaction import mask_url_passwords
from shared.core.scoring import SCORE_METHODS, SCORER_FAMILIES, ScoreMethod

DEFAULT_CAPTION_MODEL = "microsoft/kosmos-2-patch14-224"
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"

# Openings that say nothing about the image (| separates them). Off by default: the original
# script wrote them; a training set is better without them (`--strip-openings training`).
STOCK_OPENINGS = (
    "This image shows|This image features|This image depicts|This image is|The image shows|"
    "The image features|The image depicts|The image is|This is an image of|This is a picture of|"
    "In this image,|In the image,|This picture shows|The picture shows"
)
OPENING_PRESETS: dict[str, str] = {"training": STOCK_OPENINGS}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "input_mode": ("copy", "move"),
    "existing": ("skip", "overwrite", "append", "prepend"),
    "route_score": SCORE_METHODS,
    "threshold_family": ("", *SCORER_FAMILIES),
    "decoder": DECODER_CHOICES,
    "log_level": LOG_LEVELS,
}


@dataclass(frozen=True)
class Settings:
    """Everything a kcap process needs to know. Paths are absolute once built."""

    # Broker: None means "start an embedded Redis" (kcap up / run) .
    broker_url: str | None = None
    # Folders (the storage host's view).
    input_dir: Path | None = None
    output_dir: Path | None = None
    clip_failed_dir: Path | None = None  # None: no scoring, as in the original script
    errors_dir: Path | None = None  # default: <output_dir's parent>/errors
    state_dir: Path = Path(".kcap")
    input_mode: str = "copy"
    recursive: bool = True
    follow_symlinks: bool = False
    # Models and captioning.
    caption_model: str = DEFAULT_CAPTION_MODEL
    clip_model: str = DEFAULT_CLIP_MODEL
    # A preset name (detailed, brief, grounded-detailed) or free text; several prompts are
    # separated by newlines (the --prompt flag may be given more than once).
    prompt: str = "detailed"
    max_new_tokens: int = 128
    num_beams: int = 1  # 1: greedy, as in the original script
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    # Caption cleanup, all off by default: the caption is then exactly what the original
    # script wrote. Openings to strip: |-separated, or a preset name (OPENING_PRESETS).
    strip_openings: str = ""
    collapse_whitespace: bool = False  # runs of spaces and line breaks become one space
    trim_partial: bool = False  # cut a trailing sentence that the token limit cut short
    # Which CLIP score is compared with the threshold (shared.core.scoring.ScoreMethod).
    route_score: str = ScoreMethod.ORIGINAL.value
    # A score under the threshold goes to clip-failed. None: the scorer family's default
    # (shared.core.thresholds; CLIP's is the original script's 15). A number given here is
    # for threshold_family's scores only: another family's scores never route against it.
    threshold: float | None = None
    # "": the family of clip_model, as the storage host can tell (shared.core.thresholds).
    threshold_family: str = ""
    # Dataset outputs.
    caption_ext: str = ".txt"
    caption_prefix: str = ""
    caption_suffix: str = ""
    existing: str = "skip"  # what to do with a caption file kcap did not write
    # Device side.
    gpus: str = "auto"  # auto | cpu | all | comma list of indices
    dtype: str = "auto"
    batch_size: int = 16
    batch_wait_ms: int = 50
    # torch.compile the caption model at worker start (slower start, faster batches).
    compile: bool = False
    # At most this many image tokens per image for dynamic-resolution caption models (Qwen-VL,
    # SmolVLM/Idefics3, LLaVA-OneVision): a bigger photo is shrunk first, so one 24 MP photo
    # cannot take the whole GPU. Fixed-size families (Kosmos-2, Florence-2, LLaVA) ignore it.
    max_image_tokens: int = 1280
    # auto: kcap's static-cache decoder for Kosmos-2 with greedy decoding (the same tokens as
    # generate, faster), transformers' generate otherwise; generate: always generate.
    decoder: str = "auto"
    # Rows the static decoder decodes at once. 32 keeps the full model's weights (3.3 GB)
    # plus its cache (32 x 256 positions x 24 layers x 2 x 2048 x 2 bytes = 1.6 GB) under
    # 6 GB in bf16; CUDA out-of-memory halves it.
    decoder_slots: int = 32
    # Producer.
    stable_after_s: float = 1.0
    # An image that fails to decode is filed in errors only once its file has been still this
    # long: a writer that pauses longer than stable_after_s must not get errors for its parts.
    bad_image_settle_s: float = 30.0
    max_in_flight: int = 256
    # ...and at most this many bytes of input files: jobs carry their image, so 256 jobs of
    # 24 MP photos would hold over 2 GB in Redis. A larger single file still goes, alone.
    max_in_flight_bytes: int = 512 * 1024 * 1024
    polling: bool = False
    poll_interval_s: float = 1.0
    reconcile_every_s: float = 60.0
    # A claim this old whose job never got routed is taken as lost and sent again (a worker
    # killed between Redis handing it a job and recording it as unacknowledged loses it).
    stale_claim_s: float = 600.0
    # Caps so that one input cannot exhaust a worker's memory.
    max_file_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 100_000_000
    # Wider or taller than this is refused (0: no cap): the processors scale the short side
    # to 224, so a 1x65000 image would become 14.5 M pixels wide.
    max_aspect_ratio: float = 50.0
    # Pixels decoded and preprocessed at once per worker process (0: max_pixels).
    pixel_budget: int = 0
    # Decode JPEGs at a reduced scale (DCT scaling, short side >= 448): several times cheaper
    # on photos, slightly other pixels than the original script's, so off by default.
    fast_decode: bool = False
    # Queues: a distinct prefix lets several kcap instances share one Redis.
    queue_prefix: str = ""
    # Redis redelivers a job this long after a worker died holding it.
    visibility_timeout_s: int = 300
    # A job whose worker died this many times while holding it (OOM kill, segfault) goes to
    # errors instead of being handed out again (shared.core.attempts).
    max_worker_deaths: int = 3
    # Flower.
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_basic_auth: str | None = field(default=None, repr=False)
    # Operations.
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_address: str = "0.0.0.0"
    name_prefix: str = ""  # worker names become <prefix>-gpu<N>@<host>
    stop_timeout_s: float = 30.0
    # Every kcap process's level, the ones `kcap up`/`run` start included (they get it as
    # KCAP_LOG_LEVEL). On their terminal only warnings show below DEBUG; the log files hold it all.
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", str(self.log_level).upper())
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in (
            "max_new_tokens",
            "batch_size",
            "max_in_flight",
            "max_in_flight_bytes",
            "max_file_bytes",
            "max_pixels",
            "max_worker_deaths",
            "max_image_tokens",
            "decoder_slots",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_aspect_ratio < 0 or self.pixel_budget < 0:
            raise ConfigError("max_aspect_ratio and pixel_budget cannot be negative (0 turns them off)")
        if self.batch_wait_ms < 0 or self.stable_after_s < 0 or self.bad_image_settle_s < 0:
            raise ConfigError("batch_wait_ms, stable_after_s and bad_image_settle_s cannot be negative")
        if not self.caption_ext.startswith(".") or "/" in self.caption_ext or self.caption_ext == ".json":
            raise ConfigError(f"caption_ext must look like .txt or .caption, not {self.caption_ext!r}")
        if self.num_beams < 1 or self.no_repeat_ngram_size < 0 or self.repetition_penalty <= 0:
            raise ConfigError("num_beams >= 1, no_repeat_ngram_size >= 0 and repetition_penalty > 0")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port (KCAP_METRICS_PORT) must be 0..65535, not {self.metrics_port}")
        if self.visibility_timeout_s < 1:
            raise ConfigError("visibility_timeout_s must be at least 1 second")
        if self.flower_basic_auth is not None:
            _check_logins(self.flower_basic_auth)
        for name in ("input_dir", "output_dir", "clip_failed_dir", "errors_dir", "state_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().resolve())
        if self.errors_dir is None and self.output_dir is not None:
            object.__setattr__(self, "errors_dir", self.output_dir.parent / "errors")

    # -- derived -----------------------------------------------------------
    @property
    def score_enabled(self) -> bool:
        """Scoring happens only when there is somewhere to send low scores."""
        return self.clip_failed_dir is not None

    @property
    def prompts(self) -> list[str]:
        """The prompts, presets resolved; the first is the primary one."""
        return resolve_prompts(self.prompt)

    def caption_options(self) -> CaptionOptions:
        """How every job is captioned and scored. Set by the storage host's settings and
        carried in each job: GPU hosts follow the job, not their own settings."""
        return CaptionOptions(
            prompts=tuple(self.prompts),
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            score=self.score_enabled,
            strip_openings=self.openings,
            collapse_whitespace=self.collapse_whitespace,
            trim_partial=self.trim_partial,
            route_score=self.route_score,
        )

    @property
    def openings(self) -> tuple[str, ...]:
        """The openings to strip, a preset name resolved."""
        spec = OPENING_PRESETS.get(self.strip_openings.strip(), self.strip_openings)
        return tuple(o.strip() for o in spec.split("|") if o.strip())

    def require_broker(self) -> str:
        """The broker URL, or a ConfigError saying how to give one."""
        if not self.broker_url:
            raise ConfigError(
                "no broker: set KCAP_BROKER_URL=redis://HOST:6379/0 (or pass --broker-url), "
                "or use `kcap up`, which starts an embedded Redis"
            )
        return self.broker_url

    @property
    def caption_queue(self) -> str:
        return f"{self.queue_prefix}caption"

    @property
    def route_queue(self) -> str:
        return f"{self.queue_prefix}route"

    @property
    def shard_queue(self) -> str:
        """Dataset mode's shard jobs: a queue of their own, so that a long shard never waits
        in front of hot-folder jobs."""
        return f"{self.queue_prefix}shards"

    @property
    def keys(self) -> Keys:
        """kcap's own Redis keys for this instance (see shared.core.keys)."""
        return keys_for(self.queue_prefix)

    @property
    def masked_broker_url(self) -> str:
        return mask_url_passwords(self.broker_url or "<embedded>")

    def require_folders(self) -> tuple[Path, Path]:
        """Input and output folders, or a ConfigError saying which flag is missing."""
        if self.input_dir is None:
            raise ConfigError("no input folder: pass --input-dir DIR or set KCAP_INPUT_DIR")
        if self.output_dir is None:
            raise ConfigError("no output folder: pass --output-dir DIR or set KCAP_OUTPUT_DIR")
        return self.input_dir, self.output_dir

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if not f.repr:
                shown.append(f"{f.name}=***" if getattr(self, f.name) else f"{f.name}=None")
                continue
            value = getattr(self, f.name)
            if f.name == "broker_url" and value is not None:
                value = mask_url_passwords(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    # -- construction ------------------------------------------------------
    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Settings from KCAP_* variables, overridden by flags that are not None."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"KCAP_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, hints[f.name])
        unknown = set(flags) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)

    def child_env(self) -> dict[str, str]:
        """This process's environment with these settings on top, for a kcap child process."""
        return {**os.environ, **self.to_env()}

    def to_env(self) -> dict[str, str]:
        """KCAP_* variables that rebuild these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            env[f"KCAP_{f.name.upper()}"] = str(value)
        return env


def _check_logins(logins: str) -> None:
    """Flower splits its login on commas into user:password pairs and compares the header's
    whole "user:password" text with each: an empty user or password, or a pair without a
    colon, would let in whoever sends just that text."""
    for login in logins.split(","):
        user, colon, password = login.partition(":")
        if not (user and colon and password):
            raise ConfigError(
                "KCAP_FLOWER_BASIC_AUTH must be user:password (several: user:password,user2:password2) "
                "with neither part empty and no comma in a password"
            )


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(name: str, raw: str, hint: Any) -> Any:
    """Parse one environment value by the field's type."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        hint = inner[0]
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path:
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(
            f"KCAP_{name.upper()}={raw!r} is not a valid {getattr(hint, '__name__', hint)}"
        ) from None
