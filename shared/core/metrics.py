"""kcap's own Prometheus metrics, served by each worker process on its own port.

Flower already counts tasks by name, state and worker; these are what Flower cannot see:
where images end up, their CLIP scores, how long an image takes from enqueue to routed,
how full the batches are, how long the device takes per batch, and GPU memory.

Route worker (`kcap router`): kcap_images_routed_total{outcome}, kcap_clip_score,
kcap_end_to_end_latency_seconds.
Caption worker (`kcap worker-process`, one per GPU): kcap_images_captioned_total,
kcap_shard_samples_filed_total{outcome} (dataset mode),
kcap_batch_size, kcap_batch_seconds, kcap_batch_failures_total,
kcap_gpu_memory_allocated_bytes, kcap_gpu_memory_reserved_bytes.
Both: kcap_worker_info{worker,role,device}, and prometheus-client's process_* and python_*.

Off unless Settings.metrics_port (KCAP_METRICS_PORT, --metrics-port) is set;
`kcap worker` gives its N-th child port + N.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

from shared.core.outcomes import OUTCOMES, Outcome

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

# CLIP's logits_per_image scale (about 100 x cosine): real captions score about 15-40; the
# default threshold is 15.
CLIP_SCORE_BUCKETS = (0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 100)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


# -- the metrics, created once per process and only for the role that owns them ----------
@dataclass(frozen=True)
class RouteMetrics:
    routed: Counter
    clip_score: Histogram
    latency: Histogram


@dataclass(frozen=True)
class CaptionMetrics:
    captioned: Counter
    batch_size: Histogram
    batch_seconds: Histogram
    batch_failures: Counter
    gpu_allocated: Gauge
    gpu_reserved: Gauge
    shard_samples: Counter


@functools.cache
def route_metrics() -> RouteMetrics:
    routed = Counter(
        "kcap_images_routed",
        "Images filed by this route worker, by where they landed (counted once per image).",
        ["outcome"],
    )
    for outcome in OUTCOMES:
        routed.labels(outcome=outcome.value)  # every outcome shows from the start, at 0
    return RouteMetrics(
        routed=routed,
        clip_score=Histogram(
            "kcap_clip_score",
            "The CLIP score that routed each caption (the one compared with the threshold).",
            buckets=CLIP_SCORE_BUCKETS,
        ),
        latency=Histogram(
            "kcap_end_to_end_latency_seconds",
            "Seconds from enqueue by the producer to the image being filed.",
            buckets=LATENCY_BUCKETS,
        ),
    )


@functools.cache
def caption_metrics() -> CaptionMetrics:
    allocated = Gauge(
        "kcap_gpu_memory_allocated_bytes",
        "GPU memory held by tensors in this worker (torch allocator); 0 on CPU.",
    )
    allocated.set_function(functools.partial(_cuda_bytes, "memory_allocated"))
    reserved = Gauge(
        "kcap_gpu_memory_reserved_bytes",
        "GPU memory reserved by this worker's torch caching allocator; 0 on CPU.",
    )
    reserved.set_function(functools.partial(_cuda_bytes, "memory_reserved"))
    shard_samples = Counter(
        "kcap_shard_samples_filed",
        "Dataset mode: shard samples this worker filed, by outcome (a shard redone counts again).",
        ["outcome"],
    )
    for outcome in OUTCOMES:
        shard_samples.labels(outcome=outcome.value)
    return CaptionMetrics(
        captioned=Counter("kcap_images_captioned", "Images captioned (and scored) by this worker."),
        batch_size=Histogram("kcap_batch_size", "Images per device batch.", buckets=BATCH_SIZE_BUCKETS),
        batch_seconds=Histogram(
            "kcap_batch_seconds",
            "Device time per batch: caption generation plus CLIP scoring.",
            buckets=BATCH_SECONDS_BUCKETS,
        ),
        batch_failures=Counter("kcap_batch_failures", "Batches that raised (their jobs are retried)."),
        gpu_allocated=allocated,
        gpu_reserved=reserved,
        shard_samples=shard_samples,
    )


@functools.cache
def _worker_info() -> Info:
    return Info("kcap_worker", "The kcap worker behind this endpoint.")


def _cuda_bytes(function: str) -> float:
    # Read at scrape time, and never the call that creates a CUDA context: the scrape thread
    # must not take device memory before the models do, nor at all in a CPU worker.
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0
    return float(getattr(torch.cuda, function)())


# -- what the workers call --------------------------------------------------------------
def observe_routed(
    outcome: Outcome | None, *, score: float | None, enqueued_at: float, newly_placed: bool
) -> None:
    """Route worker: one image filed. A redelivered result that was already filed is not counted."""
    if not newly_placed or outcome is None:
        return
    metrics = route_metrics()
    metrics.routed.labels(outcome=outcome.value).inc()
    if score is not None and outcome is not Outcome.ERRORS:
        metrics.clip_score.observe(score)
    if enqueued_at > 0:
        metrics.latency.observe(max(0.0, time.time() - enqueued_at))


def observe_shard_samples(outcome: Outcome, n: int = 1) -> None:
    """Caption worker, dataset mode: samples filed into a shard's outputs."""
    caption_metrics().shard_samples.labels(outcome=outcome.value).inc(n)


def timed_batches(run: Callable[[K, list[I]], list[R]]) -> Callable[[K, list[I]], list[R]]:
    """Caption worker: wrap the batch runner so that each batch's size and device time count."""
    metrics = caption_metrics()

    def timed(key: K, items: list[I]) -> list[R]:
        started = time.perf_counter()
        try:
            results = run(key, items)
        except BaseException:
            metrics.batch_failures.inc()
            raise
        finally:
            metrics.batch_seconds.observe(time.perf_counter() - started)
            metrics.batch_size.observe(len(items))
        metrics.captioned.inc(len(results))
        return results

    return timed


def port_for(base_port: int, offset: int) -> int:
    """The metrics port of a process: base + its offset, or 0 (off) when the base is 0.

    `kcap up` gives the router offset 0 and the caption-worker supervisor offset 1; a
    supervisor gives its k-th GPU process its own port + k.
    """
    return base_port + offset if base_port else 0


@dataclass
class MetricsServer:
    """A /metrics endpoint being served: its port, and the way to stop its thread."""

    port: int
    _httpd: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(*, role: str, worker: str, port: int, address: str = "0.0.0.0") -> MetricsServer | None:
    """Serve this process's /metrics on port (0: off); None when off.

    A port that is taken is logged and skipped: metrics must never keep a worker from working.
    """
    if not port:
        return None
    if role == "route":
        route_metrics()
    elif role == "caption":
        caption_metrics()
    else:
        raise ValueError(f"unknown metrics role {role!r}")
    device = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    _worker_info().info({"worker": worker, "role": role, "device": device or "cpu"})
    try:
        httpd, thread = start_http_server(port, addr=address)
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s:%d (%s); %s runs without them. Pick a free port with "
            "KCAP_METRICS_PORT (kcap worker uses port + index, one per GPU)",
            address,
            port,
            exc,
            worker,
        )
        return None
    log.info("%s: Prometheus metrics on http://%s:%d/metrics", worker, address, port)
    return MetricsServer(port, httpd, thread)


@contextlib.contextmanager
def serving(*, role: str, worker: str, port: int, address: str = "0.0.0.0") -> Iterator[MetricsServer | None]:
    """serve() for the life of a with block: the endpoint's thread stops when the block ends."""
    server = serve(role=role, worker=worker, port=port, address=address)
    try:
        yield server
    finally:
        if server is not None:
            server.stop()
