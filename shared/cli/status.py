"""`kcap status`: queue depths, jobs in flight, outcomes, images/s and an ETA."""

from __future__ import annotations

import argparse
import json
from typing import Any

import redis

from shared.cli.options import add_settings_arguments, settings_from_args
from shared.inflight import InFlight
from shared.settings import Settings


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("status", help="queue depths, in flight, outcomes, rate, ETA")
    add_settings_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    parser.set_defaults(handler=run)


def collect(settings: Settings) -> dict[str, Any]:
    assert settings.broker_url
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    inflight = InFlight(client, settings)
    in_flight = inflight.size()
    rate = inflight.rate()
    return {
        "broker": settings.masked_broker_url,
        "queues": {q: int(client.llen(q)) for q in (settings.caption_queue, settings.route_queue)},
        # kombu keeps delivered-but-unacknowledged messages in this hash.
        "unacked": int(client.hlen("unacked")),
        "in_flight": in_flight,
        "outcomes": inflight.counts(),
        "images_per_s": round(rate, 3),
        "eta_s": round(in_flight / rate, 1) if rate > 0 else None,
    }


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.broker_url:
        from shared.celery_app import raise_missing_broker

        raise_missing_broker()
    report = collect(settings)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"broker      {report['broker']}")
    for queue, depth in report["queues"].items():
        print(f"queue       {queue}: {depth}")
    print(f"in flight   {report['in_flight']} (unacked {report['unacked']})")
    print("outcomes    " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items()))
    eta = "-" if report["eta_s"] is None else f"{report['eta_s']:.0f}s"
    print(f"rate        {report['images_per_s']:.2f} images/s, ETA {eta}")
    return 0
