"""`kcap demo [DIR]`: try kcap in under a minute with no model hub.

It builds tiny random models and a folder of images under DIR, then runs `kcap run` over it
with the embedded Redis. Random models write random words, which the tiny random CLIP scores
from about -12 to 6, median 0 (real captions of real photos score 15 to 40 with CLIP-L), so
the demo routes at threshold 0: about half the images land in captioned/, half in clip_failed/, and the
unreadable one in errors/.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli.exits import Exit
from shared.cli.run import run_backlog
from shared.core.logs import is_debug
from shared.core.settings import Settings

if TYPE_CHECKING:
    from workers.tiny.demo import Demo

DEMO_THRESHOLD = 0.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("demo", help="try kcap in a minute: tiny models, sample images, one run")
    parser.add_argument(
        "dir", type=Path, nargs="?", default=Path("kcap-demo"), help="demo folder (kcap-demo)"
    )
    parser.add_argument(
        "--images", type=int, default=24, help="sample images to make (24), besides one unreadable file"
    )
    parser.add_argument("--no-run", action="store_true", help="only prepare the folder; print the commands")
    parser.set_defaults(handler=demo)


def demo_flags(prepared: Demo) -> list[str]:
    """The `kcap up` flags for a demo folder (the README gives them for kcap-demo/)."""
    return [
        "--input-dir", str(prepared.inbox),
        "--output-dir", str(prepared.captioned),
        "--clip-failed-dir", str(prepared.clip_failed),
        "--errors-dir", str(prepared.errors),
        "--state-dir", str(prepared.state),
        "--caption-model", str(prepared.caption_model),
        "--clip-model", str(prepared.clip_model),
        "--threshold", f"{DEMO_THRESHOLD:g}",
    ]  # fmt: skip


def demo(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from workers.tiny.demo import prepare_demo

    if not is_debug():
        transformers_logging.disable_progress_bar()  # "Writing model shards" as the models are saved
    prepared = prepare_demo(args.dir, images=args.images)
    flags = demo_flags(prepared)
    print(f"demo folder: {prepared.root}")
    if not args.no_run:
        settings = Settings.build(
            input_dir=prepared.inbox,
            output_dir=prepared.captioned,
            clip_failed_dir=prepared.clip_failed,
            errors_dir=prepared.errors,
            state_dir=prepared.state,
            caption_model=str(prepared.caption_model),
            clip_model=str(prepared.clip_model),
            threshold=DEMO_THRESHOLD,
            broker_url=None,
        )
        code = run_backlog(settings)  # its summary has the counts and the report's command
        if code != Exit.OK:
            return code
    command = " ".join(shlex.quote(part) for part in flags)
    print("next, to caption whatever lands in the inbox until Ctrl-C:")
    print(f"  kcap up {command}")
    if args.no_run:
        print(f"or once, then exit:\n  kcap run {command}")
    return Exit.OK
