"""Where a kcap instance stands, read from its Redis: queue depths, what workers hold, jobs in
flight, outcomes, images/s and an ETA. `kcap status` prints it."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from shared.core.broker import redis_client
from shared.core.dead_letters import DeadLetters
from shared.core.errors import BrokerError, ConfigError
from shared.core.inflight import InFlight
from shared.core.keys import KOMBU_UNACKED, kombu_queue_lists
from shared.core.redaction import mask_url_passwords
from shared.core.settings import Settings
from shared.core.shard_board import ShardBoard

# How many of the newest dead letters `kcap status` shows.
NEWEST_DEAD_LETTERS = 5


def broker_file(settings: Settings) -> Path:
    """Where `kcap up`/`kcap run` write the embedded broker's URL, for `kcap status`."""
    return settings.state_dir / "broker_url"


def write_broker_file(settings: Settings, url: str) -> Path:
    """Write the embedded broker's URL (password included) for `kcap status`: readable by
    this user only. The file is created 0600, never widened and narrowed after, and renamed
    into place, so no other user can catch it open, even with a permissive umask."""
    path = broker_file(settings)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)  # left by a crashed run that had this pid
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(url + "\n")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def broker_url_for(settings: Settings) -> str:
    """The configured broker, else the embedded one that `kcap up` announced in its state folder."""
    if settings.broker_url:
        return settings.broker_url
    path = broker_file(settings)
    try:
        url = path.read_text().strip()
    except FileNotFoundError:
        url = ""
    if not url:
        raise ConfigError(
            f"no broker: set KCAP_BROKER_URL=redis://HOST:6379/0 (or pass --broker-url), or run "
            f"this beside `kcap up` with the same --state-dir (no {path} found)"
        )
    return url


def queue_depth(client: redis.Redis, queue: str) -> int:
    pipe = client.pipeline()
    for key in kombu_queue_lists(queue):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def unacked_by_queue(client: redis.Redis) -> Counter[str]:
    """Messages that workers hold (reserved or running), by the queue they came from."""
    counts: Counter[str] = Counter()
    for _tag, raw in client.hscan_iter(KOMBU_UNACKED, count=500):
        try:
            _payload, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            counts["?"] += 1
            continue
        counts[str(routing_key)] += 1
    return counts


def collect(settings: Settings) -> dict[str, Any]:
    """The status as one JSON-ready object."""
    url = broker_url_for(settings)
    client = redis_client(url, decode_responses=True)
    try:
        settings = settings.replace(broker_url=url)
        snapshot = InFlight(client, settings).snapshot()
        queues = (settings.caption_queue, settings.route_queue, settings.shard_queue)
        unacked = unacked_by_queue(client)
        return {
            "broker": mask_url_passwords(url),
            "queue_prefix": settings.queue_prefix,
            "queues": {
                q: {"waiting": queue_depth(client, q), "held_by_workers": unacked.get(q, 0)} for q in queues
            },
            # kombu's unacked hash: jobs delivered to a worker and not yet acknowledged.
            "unacked": sum(unacked.get(q, 0) for q in queues),
            "in_flight": snapshot.in_flight,
            "outcomes": {outcome.value: n for outcome, n in snapshot.counts.items()},
            "routed": snapshot.routed,
            "images_per_s": round(snapshot.images_per_s, 3),
            "eta_s": snapshot.eta_s,
            "dead_letters": dead_letter_summary(DeadLetters(client, settings.keys)),
            # Dataset mode: samples and shards (None when no shard job was ever queued).
            "shards": shard_summary(ShardBoard(client, settings.keys)),
        }
    except redis.exceptions.RedisError as exc:
        raise BrokerError(
            f"cannot read status from {mask_url_passwords(url)}: {exc} "
            "(is Redis up? a broker_url file left by a crashed `kcap up` points nowhere)"
        ) from None
    finally:
        client.close()


def shard_summary(board: ShardBoard) -> dict[str, Any] | None:
    snapshot = board.snapshot()
    return snapshot.to_dict() if snapshot.total_shards else None


def dead_letter_summary(dead_letters: DeadLetters, *, newest: int = NEWEST_DEAD_LETTERS) -> dict[str, Any]:
    """How many messages were set aside, and the newest few: when, from where, why."""
    return {
        "count": dead_letters.total(),
        "newest": [
            {key: letter.get(key) for key in ("time", "queue", "task", "id", "reason")}
            for letter in dead_letters.newest(newest)
        ],
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"broker      {report['broker']}"]
    if report["queue_prefix"]:
        lines.append(f"instance    queue prefix {report['queue_prefix']!r}")
    for queue, depth in report["queues"].items():
        held = depth["held_by_workers"]
        lines.append(f"queue       {queue}: {depth['waiting']} waiting, {held} held by workers")
    lines.append(f"in flight   {report['in_flight']} (unacked {report['unacked']})")
    outcomes = report["outcomes"]
    lines.append(
        f"routed      {report['routed']}: output {outcomes['output']}, "
        f"clip-failed {outcomes['clip_failed']}, errors {outcomes['errors']}"
    )
    eta = "-" if report["eta_s"] is None else f"{report['eta_s']:.0f}s"
    lines.append(f"rate        {report['images_per_s']:.2f} images/s (last minute), ETA {eta}")
    shards = report.get("shards")
    if shards:
        by_state, samples = shards["shards"], shards["samples"]
        lines.append(
            f"shards      done {by_state['done']}, running {by_state['running']}, "
            f"failed {by_state['failed']}, remaining {by_state['queued']}"
        )
        eta = "-" if shards["eta_s"] is None else f"{shards['eta_s']:.0f}s"
        lines.append(
            f"samples     output {samples['output']}, clip-failed {samples['clip_failed']}, "
            f"errors {samples['errors']}; {shards['samples_per_s']:.2f} samples/s (last minute), ETA {eta}"
        )
    dead = report["dead_letters"]
    lines.append(f"set aside   {dead['count']} message(s) no worker can run (dead letters)")
    for letter in dead["newest"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter["time"]))
        lines.append(f"            {when} {letter['queue']}: {_one_line(str(letter['reason']))}")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 160) -> str:
    """A reason as one short printable line: it came from a message, so it may hold anything
    (a terminal escape included)."""
    flat = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
