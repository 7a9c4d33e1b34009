"""kcap's Prometheus metrics, in process: what counts, what does not, and the port rules."""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request

import pytest
from prometheus_client import REGISTRY

from shared.core import metrics
from shared.core.errors import ConfigError
from shared.core.outcomes import Outcome
from shared.core.settings import Settings


def _sample(name: str, **labels: str) -> float:
    """A sample's value; a sample that does not exist fails the test (it never reads as 0)."""
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels or ''} in the registry"
    return value


def test_a_routed_image_counts_once_with_its_score_and_latency() -> None:
    metrics.route_metrics()
    before = (
        _sample("kcap_images_routed_total", outcome="clip_failed"),
        _sample("kcap_clip_score_count"),
        _sample("kcap_clip_score_sum"),
        _sample("kcap_end_to_end_latency_seconds_count"),
    )
    metrics.observe_routed(Outcome.CLIP_FAILED, score=12.5, enqueued_at=1.0, newly_placed=True)
    metrics.observe_routed(Outcome.CLIP_FAILED, score=12.5, enqueued_at=1.0, newly_placed=False)  # again
    metrics.observe_routed(None, score=None, enqueued_at=1.0, newly_placed=False)  # input changed
    metrics.observe_routed(Outcome.ERRORS, score=None, enqueued_at=0.0, newly_placed=True)
    after = (
        _sample("kcap_images_routed_total", outcome="clip_failed"),
        _sample("kcap_clip_score_count"),
        _sample("kcap_clip_score_sum"),
        _sample("kcap_end_to_end_latency_seconds_count"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 12.5, 1]
    assert _sample("kcap_images_routed_total", outcome="output") == 0  # present from the start


def test_timed_batches_counts_sizes_images_and_failures() -> None:
    def run(key: str, items: list[int]) -> list[int]:
        if key == "bad":
            raise RuntimeError("device fell over")
        return [i * 2 for i in items]

    timed = metrics.timed_batches(run)
    before = (
        _sample("kcap_batch_size_sum"),
        _sample("kcap_batch_seconds_count"),
        _sample("kcap_images_captioned_total"),
        _sample("kcap_batch_failures_total"),
    )
    assert timed("ok", [1, 2, 3]) == [2, 4, 6]
    with pytest.raises(RuntimeError, match="device fell over"):
        timed("bad", [1, 2])
    after = (
        _sample("kcap_batch_size_sum"),
        _sample("kcap_batch_seconds_count"),
        _sample("kcap_images_captioned_total"),
        _sample("kcap_batch_failures_total"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [5, 2, 3, 1]
    assert _sample("kcap_gpu_memory_allocated_bytes") == 0  # no CUDA here


def test_the_port_comes_from_settings_or_the_environment() -> None:
    assert Settings.build({}).metrics_port == 0
    assert Settings.build({"KCAP_METRICS_PORT": "9400"}).metrics_port == 9400
    # A flag wins over the environment.
    assert Settings.build({"KCAP_METRICS_PORT": "9400"}, metrics_port=9500).metrics_port == 9500
    for bad in ("nine", "70000"):
        with pytest.raises(ConfigError, match="KCAP_METRICS_PORT"):
            Settings.build({"KCAP_METRICS_PORT": bad})
    assert Settings.build({}).metrics_address == "0.0.0.0"


def test_a_missing_metric_fails_the_reading_instead_of_reading_zero() -> None:
    metrics.route_metrics()
    with pytest.raises(AssertionError, match="no sample kcap_images_routed_total"):
        _sample("kcap_images_routed_total", outcome="nowhere")
    with pytest.raises(AssertionError, match="no sample kcap_no_such_metric"):
        _sample("kcap_no_such_metric")


def test_the_endpoint_serves_the_metrics_and_stops_with_its_thread() -> None:
    from shared.core.embedded_redis import free_port

    port = free_port()
    threads = set(threading.enumerate())
    with metrics.serving(role="route", worker="route@test", port=port, address="127.0.0.1") as server:
        assert server is not None and server.port == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'kcap_images_routed_total{outcome="output"}' in body
        assert set(threading.enumerate()) - threads  # its server thread runs
    assert not [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # nothing listens any more


def test_a_taken_port_is_logged_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    assert metrics.serve(role="route", worker="route@test", port=0) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="shared.core.metrics"):
            assert metrics.serve(role="route", worker="route@test", port=port, address="127.0.0.1") is None
    assert "cannot serve metrics" in caplog.text and "route@test" in caplog.text
