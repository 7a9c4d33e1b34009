"""Command-line flags that map onto Settings fields, shared by every subcommand."""

from __future__ import annotations

import argparse
from typing import Any

from shared.core.decoding import DECODER_CHOICES
from shared.core.scoring import SCORE_METHODS, SCORER_FAMILIES
from shared.core.settings import LOG_LEVELS, Settings

# On every subcommand, those without the other settings too (shared.cli.main).
LOG_LEVEL_FLAGS = ("--log-level",)
LOG_LEVEL_OPTIONS: dict[str, Any] = {
    "type": str.upper,
    "choices": list(LOG_LEVELS),
    "help": "INFO (default), DEBUG: every line on the terminal too; passed to every process started",
}

# (flags, settings field, argparse keyword arguments). Defaults stay None so that unset
# flags fall through to KCAP_* variables and then to Settings' defaults.
_FLAGS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--broker-url",), "broker_url", {"help": "Redis URL; unset: kcap up/run start an embedded Redis"}),
    (("--input-dir", "--input_dir"), "input_dir", {"help": "watched folder"}),
    (("--output-dir", "--output_dir"), "output_dir", {"help": "captioned images land here"}),
    (
        ("--clip-failed-dir", "--clip_failed_dir"),
        "clip_failed_dir",
        {"help": "images scoring under the threshold land here; unset: no scoring"},
    ),
    (("--errors-dir",), "errors_dir", {"help": "unreadable inputs (default: beside the output folder)"}),
    (("--state-dir",), "state_dir", {"help": "embedded Redis data and logs (default .kcap)"}),
    (("--input-mode",), "input_mode", {"choices": ["copy", "move"], "help": "copy (default) or move inputs"}),
    (
        ("--caption-model",),
        "caption_model",
        {
            "help": "caption model hub id or local folder: Kosmos-2 (default), Florence-2, "
            "Qwen2.5-VL/Qwen3-VL, LLaVA/LLaVA-OneVision, Idefics3/SmolVLM, BLIP-2"
        },
    ),
    (
        ("--clip-model",),
        "clip_model",
        {"help": "scorer hub id or local folder: CLIP (default), SigLIP or SigLIP 2"},
    ),
    (
        ("--prompt",),
        "prompt",
        {
            "action": "append",
            "help": "preset (detailed, brief, grounded-detailed: each caption family sends its own "
            "form) or free text; repeat it to caption with several prompts, the best score wins",
        },
    ),
    (("--max-new-tokens",), "max_new_tokens", {"type": int, "help": "caption length cap (128)"}),
    (("--num-beams",), "num_beams", {"type": int, "help": "beam search width (1: greedy)"}),
    (("--repetition-penalty",), "repetition_penalty", {"type": float, "help": "1.0: none"}),
    (("--no-repeat-ngram-size",), "no_repeat_ngram_size", {"type": int, "help": "0: off"}),
    (
        ("--strip-openings",),
        "strip_openings",
        {"help": "openings to strip from captions: |-separated, or the preset 'training' (default: none)"},
    ),
    (("--caption-ext",), "caption_ext", {"help": "caption file extension (.txt)"}),
    (("--caption-prefix",), "caption_prefix", {"help": "text before every caption, e.g. a trigger word"}),
    (("--caption-suffix",), "caption_suffix", {"help": "text after every caption"}),
    (
        ("--existing",),
        "existing",
        {"choices": ["skip", "overwrite", "append", "prepend"], "help": "a caption kcap did not write"},
    ),
    (("--metrics-port",), "metrics_port", {"type": int, "help": "Prometheus port per process (0: off)"}),
    (("--stop-timeout-s",), "stop_timeout_s", {"type": float, "help": "warm shutdown limit (30)"}),
    (
        ("--threshold",),
        "threshold",
        {
            "type": float,
            "help": "score under which images fail (the scorer family's default: CLIP 15, SigLIP 0.1)",
        },
    ),
    (
        ("--threshold-family",),
        "threshold_family",
        {
            "choices": list(SCORER_FAMILIES),
            "help": "the scorer family --threshold is for (default: the family of --clip-model)",
        },
    ),
    (
        ("--route-score",),
        "route_score",
        {
            "choices": list(SCORE_METHODS),
            "help": "the CLIP score compared with the threshold: original (the original script's, "
            "default) or sentence-chunks; both are recorded",
        },
    ),
    (
        ("--decoder",),
        "decoder",
        {
            "choices": list(DECODER_CHOICES),
            "help": "auto (default): kcap's static-cache decoder for greedy Kosmos-2, generate "
            "otherwise; generate: always transformers' generate",
        },
    ),
    (
        ("--decoder-slots",),
        "decoder_slots",
        {"type": int, "help": "rows the static decoder runs at once (32)"},
    ),
    (("--gpus",), "gpus", {"help": "auto | cpu | all | comma list such as 0,2,3"}),
    (("--dtype",), "dtype", {"choices": ["auto", "float32", "bfloat16", "float16"]}),
    (("--batch-size",), "batch_size", {"type": int, "help": "images per batch (16)"}),
    (
        ("--max-image-tokens",),
        "max_image_tokens",
        {"type": int, "help": "cap on image tokens per image for dynamic-resolution caption models (1280)"},
    ),
    (("--batch-wait-ms",), "batch_wait_ms", {"type": int, "help": "longest wait to fill a batch (50)"}),
    (("--stable-after-s",), "stable_after_s", {"type": float, "help": "seconds a file must be still (1.0)"}),
    (
        ("--bad-image-settle-s",),
        "bad_image_settle_s",
        {"type": float, "help": "file an undecodable image only after it was still this long (30)"},
    ),
    (("--max-in-flight",), "max_in_flight", {"type": int, "help": "cap on queued jobs (256)"}),
    (
        ("--max-in-flight-bytes",),
        "max_in_flight_bytes",
        {"type": int, "help": "cap on the input bytes of queued jobs (512 MiB)"},
    ),
    (("--reconcile-every-s",), "reconcile_every_s", {"type": float, "help": "rescan period (60)"}),
    (
        ("--stale-claim-s",),
        "stale_claim_s",
        {"type": float, "help": "resend a job unrouted this long (600)"},
    ),
    (("--poll-interval-s",), "poll_interval_s", {"type": float, "help": "polling observer period (1.0)"}),
    (("--max-file-bytes",), "max_file_bytes", {"type": int, "help": "largest input file (64 MiB)"}),
    (("--max-pixels",), "max_pixels", {"type": int, "help": "largest image in pixels (100M)"}),
    (
        ("--max-aspect-ratio",),
        "max_aspect_ratio",
        {"type": float, "help": "refuse images wider or taller than this ratio (50; 0 = no cap)"},
    ),
    (
        ("--pixel-budget",),
        "pixel_budget",
        {"type": int, "help": "pixels decoded at once per worker (0 = --max-pixels)"},
    ),
    (("--queue-prefix",), "queue_prefix", {"help": "prefix of queue names, one per kcap instance"}),
    (("--visibility-timeout-s",), "visibility_timeout_s", {"type": int, "help": "redelivery delay (300)"}),
    (
        ("--max-worker-deaths",),
        "max_worker_deaths",
        {"type": int, "help": "a job whose worker died this often goes to errors (3)"},
    ),
    (("--flower-address",), "flower_address", {"help": "Flower bind address (127.0.0.1)"}),
    (("--flower-port",), "flower_port", {"type": int, "help": "Flower port (5555)"}),
    (LOG_LEVEL_FLAGS, "log_level", LOG_LEVEL_OPTIONS),
]

_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--polling", "polling", True, "poll the folder instead of OS events (network filesystems)"),
    ("--no-recursive", "recursive", False, "watch only the top folder"),
    ("--follow-symlinks", "follow_symlinks", True, "accept symlinks pointing outside the input folder"),
    ("--trim-partial", "trim_partial", True, "cut a last sentence that the token limit cut short"),
    ("--collapse-whitespace", "collapse_whitespace", True, "make runs of spaces and line breaks one space"),
    ("--compile", "compile", True, "torch.compile the caption model at worker start"),
    ("--fast-decode", "fast_decode", True, "shrink photos cheaply before the processors (other pixels)"),
]


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also KCAP_<NAME> in the environment)")
    for flags, dest, kwargs in _FLAGS:
        group.add_argument(*flags, dest=dest, default=None, **kwargs)
    for flag, dest, value, help_text in _SWITCHES:
        group.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = {dest for _, dest, _ in _FLAGS} | {dest for _, dest, _, _ in _SWITCHES}
    values = {name: getattr(args, name, None) for name in names}
    prompts = values.get("prompt")
    if isinstance(prompts, list):
        values["prompt"] = "\n".join(prompts)
    return Settings.build(**values)
