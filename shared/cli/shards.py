"""Dataset mode: `kcap run --input-shards` (caption the shards, then exit) and `kcap submit`
(queue the same jobs into a running `kcap up` fleet).

The four locations may be local paths or fsspec URLs (s3://, gs://, hf://, file://).
Credentials come from each store's usual environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL,
a profile, ...), or from --storage-option KEY=VALUE, which `kcap run` hands its workers in
their environment (never in a message).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections import Counter
from typing import Any

from shared.cli.exits import Exit
from shared.cli.options import settings_from_args
from shared.cli.stack import Stack, start_logging
from shared.core.embedded_redis import private_folder
from shared.core.errors import ConfigError
from shared.core.folder_lock import hold_folders
from shared.core.messages import SHARD_OUTPUTS
from shared.core.settings import Settings
from shared.core.shard_board import ShardBoard, ShardEntry, ShardState
from shared.core.storage_env import STORAGE_OPTIONS_ENV

log = logging.getLogger(__name__)


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset mode (WebDataset tar or Parquet shards, local or fsspec URLs)")
    group.add_argument(
        "--input-shards",
        default=None,
        metavar="PATTERN",
        help="shards to caption: a folder, a glob, or a brace pattern such as shards/{00000..00099}.tar; "
        "--output-dir and --clip-failed-dir then name shard folders (paths or URLs)",
    )
    group.add_argument(
        "--captions-dir", default=None, help="CAPTIONS: one Parquet per shard, and _done/ markers"
    )
    group.add_argument(
        "--shard-output",
        choices=SHARD_OUTPUTS,
        default="full",
        help="full (default): output and clip-failed tars with the images, and the Parquet; "
        "captions: the Parquet alone, no image copied",
    )
    group.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="samples per job, so that several workers share a large shard (Parquet; a tar is one job)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="caption again shards whose marker has other settings"
    )
    group.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec storage option, e.g. endpoint_url=http://minio:9000 (repeat for more)",
    )


def storage_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs as fsspec options; VALUE as JSON when it parses (true, 3), else text."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--storage-option takes KEY=VALUE, not {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _location(value: str | None) -> str | None:
    """A URL as given; a local path made absolute (the workers may run elsewhere)."""
    if not value:
        return None
    return value if "://" in value else os.path.abspath(os.path.expanduser(value))


def shard_request(args: argparse.Namespace) -> tuple[Any, Settings]:
    """The request and the settings of a dataset-mode command (folders are not Paths here)."""
    from producer.shard_plan import ShardRequest

    env = os.environ
    output = _location(args.output_dir or env.get("KCAP_OUTPUT_DIR"))
    clip_failed = _location(args.clip_failed_dir or env.get("KCAP_CLIP_FAILED_DIR"))
    captions = _location(args.captions_dir)
    if captions is None:
        raise ConfigError(
            "dataset mode needs --captions-dir (a folder or URL for the Parquet and the markers)"
        )
    if output is None and args.shard_output == "full":
        raise ConfigError(
            "dataset mode needs --output-dir (or --shard-output captions for the Parquet alone)"
        )
    request = ShardRequest(
        pattern=args.input_shards,
        output_url=output or "",
        clip_failed_url=clip_failed,
        captions_url=captions,
        shard_output=args.shard_output,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        storage_options=storage_options(args.storage_option),
    )
    for name in ("input_dir", "output_dir", "clip_failed_dir", "errors_dir"):
        setattr(args, name, None)  # not folders of this host: they travel as URLs in the jobs
    settings = settings_from_args(args).replace(input_dir=None, output_dir=None, clip_failed_dir=None)
    return request, settings


def _plan(settings: Settings, request: Any) -> Any:
    from producer.shard_plan import plan
    from shared.shards.markers import refuse_mixed

    found = plan(settings, request)
    if found.skipped:
        log.warning("%d shard(s) already done with these settings: skipped", len(found.skipped))
    refuse_mixed(found.refused)  # a ConfigError naming the first, with what to do
    return found


def sweep_old_temporaries(url: str, storage_options: dict[str, Any] | None) -> None:
    """What writers killed a day or more ago left in a destination (no live writer's are that
    old); a store that will not list them is no reason to stop the run."""
    from shared.shards.sweeping import sweep_temporaries

    try:
        sweep_temporaries(url, storage_options=storage_options)
    except Exception as exc:
        log.warning("cannot look for abandoned temporaries in %s (%s)", url, exc)


def run_shards(args: argparse.Namespace) -> int:
    """`kcap run --input-shards`: an embedded Redis and workers, every shard job, then exit."""
    from producer.shard_submit import submit, wait_finished
    from shared.cli.progress import Progress
    from shared.core.celery_app import make_app
    from shared.shards.staging import check_writable

    request, settings = shard_request(args)
    if request.storage_options:
        os.environ[STORAGE_OPTIONS_ENV] = json.dumps(request.storage_options)
    found = _plan(settings, request)
    if not found.jobs:
        print(f"kcap run: nothing to do ({len(found.skipped)} shard(s) already done)")
        return Exit.OK
    # The workers of this run write with this host's credentials: try them once before any
    # shard is captioned (`kcap submit` cannot: its workers hold their own).
    for url in request.destinations:
        check_writable(url, storage_options=request.storage_options or None)
        sweep_old_temporaries(url, request.storage_options or None)
    private_folder(settings.state_dir)
    # One kcap on a state folder: its Redis, broker_url and logs (the outputs are shards, each
    # written whole by one worker under a lease, so no folder lock is needed for them).
    locks = hold_folders(settings.replace(errors_dir=None), command="kcap run --input-shards", state=True)
    verbose, logs = start_logging(settings)
    stop = threading.Event()
    progress = Progress(title=f"kcap run: {request.pattern}", log_dir=logs)
    try:
        with Stack(settings, flower=False, router=False, output=progress.emit, verbose=verbose) as stack:
            board = ShardBoard.connect(stack.settings)
            board.clear()  # the embedded Redis keeps an earlier run's board
            job_ids = submit(make_app(stack.settings), board, found, queue=settings.shard_queue)
            progress.watch_shards(board)
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())

            def on_progress() -> None:
                stack.keep_alive()
                progress.tick()

            entries = wait_finished(board, job_ids, stop=stop, on_progress=on_progress)
            progress.close()  # the final counts, read before the broker stops
            board.close()
    finally:
        progress.close()
        locks.release()
    return report(entries, job_ids, skipped=len(found.skipped), emit=progress.emit, logs=str(logs))


def report(entries: dict[str, ShardEntry], job_ids: list[str], *, skipped: int, emit: Any, logs: str) -> int:
    """Print the counts; non-zero when a shard failed or the run was stopped before the end."""
    states = Counter(entry.state for entry in entries.values())
    samples: Counter[str] = Counter()
    for entry in entries.values():
        samples.update(entry.counts)
    unfinished = len(job_ids) - states[ShardState.DONE] - states[ShardState.FAILED]
    emit(
        f"kcap run: shards done {states[ShardState.DONE]}, failed {states[ShardState.FAILED]}, "
        f"skipped {skipped}, unfinished {unfinished}; samples output {samples['output']}, "
        f"clip-failed {samples['clip_failed']}, errors {samples['errors']}; logs in {logs}"
    )
    for entry in entries.values():
        if entry.state is ShardState.FAILED:
            emit(f"kcap run: shard {entry.chunk} failed: {entry.reason} (run again to retry it)")
    if unfinished:
        return Exit.INTERRUPTED
    return Exit.FAILURE if states[ShardState.FAILED] else Exit.OK


def add_submit_parser(commands: Any) -> None:
    from shared.cli.options import add_settings_arguments

    parser = commands.add_parser("submit", help="queue shard jobs into a running `kcap up` (dataset mode)")
    add_settings_arguments(parser)
    add_shard_arguments(parser)
    parser.add_argument("--wait", action="store_true", help="wait until every shard job is finished")
    parser.set_defaults(handler=submit_shards)


def submit_shards(args: argparse.Namespace) -> int:
    """`kcap submit --input-shards ...`: plan, queue into the fleet's Redis, and return (or wait).

    The workers take credentials from their own environment: every host needs them."""
    from producer.shard_submit import submit, wait_finished
    from shared.core.celery_app import make_app
    from shared.core.status import broker_url_for

    if not args.input_shards:
        raise ConfigError("kcap submit needs --input-shards PATTERN")
    request, settings = shard_request(args)
    settings = settings.replace(broker_url=broker_url_for(settings))
    found = _plan(settings, request)
    board = ShardBoard.connect(settings)
    try:
        job_ids = submit(make_app(settings), board, found, queue=settings.shard_queue)
        print(f"kcap submit: {len(job_ids)} shard job(s) queued, {len(found.skipped)} already done")
        if not args.wait or not job_ids:
            return Exit.OK
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        entries = wait_finished(board, job_ids, stop=stop)
    finally:
        board.close()
    return report(entries, job_ids, skipped=len(found.skipped), emit=print, logs="the workers' logs")
