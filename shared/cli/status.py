"""`kcap status`: queue depths, jobs in flight, outcomes, images/s and an ETA.

Without a broker URL it reads the one that `kcap up` wrote under the state folder, so
`kcap status` works as it is next to a running `kcap up`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import redis

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.errors import BrokerError, ConfigError
from shared.inflight import InFlight
from shared.redaction import mask_url_passwords
from shared.settings import Settings

# kombu's Redis transport: a message with priority p > 0 waits in "<queue>\x06\x16<p>", and
# every delivered-but-unacknowledged message is a [payload, exchange, routing key] entry
# of this hash, whatever the queue.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("status", help="queue depths, in flight, outcomes, rate, ETA")
    add_settings_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    parser.set_defaults(handler=run)


def broker_url_for(settings: Settings) -> str:
    """The configured broker, else the embedded one that `kcap up` announced in its state folder."""
    if settings.broker_url:
        return settings.broker_url
    from shared.cli.up import broker_file

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
    pipe.llen(queue)
    for step in _PRIORITY_STEPS:
        pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
    return sum(int(n) for n in pipe.execute())


def unacked_by_queue(client: redis.Redis) -> Counter[str]:
    """Messages that workers hold (reserved or running), by the queue they came from."""
    counts: Counter[str] = Counter()
    for _tag, raw in client.hscan_iter(_UNACKED_KEY, count=500):
        try:
            _payload, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            counts["?"] += 1
            continue
        counts[str(routing_key)] += 1
    return counts


def eta_s(in_flight: int, rate: float) -> float | None:
    """Seconds until what is in flight is routed at the current rate; None: no rate yet."""
    if not in_flight:
        return 0.0
    return round(in_flight / rate, 1) if rate > 0 else None


def collect(settings: Settings) -> dict[str, Any]:
    url = broker_url_for(settings)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        settings = settings.replace(broker_url=url)
        inflight = InFlight(client, settings)
        queues = (settings.caption_queue, settings.route_queue)
        unacked = unacked_by_queue(client)
        in_flight = inflight.size()
        rate = inflight.rate()
        outcomes = inflight.counts()
        return {
            "broker": mask_url_passwords(url),
            "queue_prefix": settings.queue_prefix,
            "queues": {
                q: {"waiting": queue_depth(client, q), "held_by_workers": unacked.get(q, 0)} for q in queues
            },
            # kombu's unacked hash: jobs delivered to a worker and not yet acknowledged.
            "unacked": sum(unacked.get(q, 0) for q in queues),
            "in_flight": in_flight,
            "outcomes": outcomes,
            "routed": sum(outcomes.values()),
            "images_per_s": round(rate, 3),
            "eta_s": eta_s(in_flight, rate),
        }
    except redis.exceptions.RedisError as exc:
        raise BrokerError(
            f"cannot read status from {mask_url_passwords(url)}: {exc} "
            "(is Redis up? a broker_url file left by a crashed `kcap up` points nowhere)"
        ) from None
    finally:
        client.close()


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
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(settings_from_args(args))
    print(json.dumps(report) if args.json else render(report))
    return 0
