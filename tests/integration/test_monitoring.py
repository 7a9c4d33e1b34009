"""Watching kcap on real processes: Flower's API and /metrics, kcap's own Prometheus
endpoints on the workers, and `kcap status`, all checked against what was routed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.cli.main import main
from shared.core.embedded_redis import free_port
from shared.core.settings import Settings
from tests.conftest import REPO, Processes, kcap_to_the_end, wait_for
from tests.integration.helpers import image_bytes, records, routed_sources
from tests.integration.monitoring import answers, http_get, kcap_status, scrape, value, value_or_zero
from tests.tolerances import float64_error
from workers.tiny.images import tiny_images

HOST = socket.gethostname()
LOGIN = "kcap-test:s3cret-Pa55word"


def _drop(settings: Settings, n: int, *, seed: int) -> None:
    assert settings.input_dir is not None
    for i, image in enumerate(tiny_images(n, seed=seed)):
        (settings.input_dir / f"m{i:02d}.png").write_bytes(image_bytes(image))


def _flower_is_up(port: int) -> Callable[[], bool]:
    return lambda: answers(f"http://127.0.0.1:{port}/healthcheck", auth=LOGIN)


@pytest.mark.slow  # 5-7 s: keeps `make test` within its 6 minutes on a clean clone
def test_flower_and_kcap_metrics_count_every_routed_image(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url)
    flower_port, caption_port, route_port = free_port(), free_port(), free_port()
    loopback = {"KCAP_METRICS_ADDRESS": "127.0.0.1"}
    # Flower's API answers only with a login configured (or FLOWER_UNAUTHENTICATED_API);
    # kcap keeps that default, so the test logs in, on loopback.
    flower = procs.kcap(
        "flower",
        "--flower-port",
        str(flower_port),
        settings=settings,
        extra_env={"KCAP_FLOWER_BASIC_AUTH": LOGIN},
    )
    procs.kcap("worker", settings=settings, extra_env={**loopback, "KCAP_METRICS_PORT": str(caption_port)})
    procs.kcap("router", settings=settings, extra_env={**loopback, "KCAP_METRICS_PORT": str(route_port)})
    wait_for(_flower_is_up(flower_port), timeout_s=60, what="Flower up", logs=procs.tail)
    procs.kcap("watch", settings=settings)
    _drop(settings, 5, seed=41)

    wait_for(lambda: len(routed_sources(settings)) >= 5, timeout_s=120, what="5 routed", logs=procs.tail)
    found = records(settings)
    assert len(found["output"]) == 5 and not found["errors"]
    assert {r["worker"] for r in found["output"]} == {f"cpu@{HOST}"}

    # Flower saw both workers and every task, by name.
    flower_url = f"http://127.0.0.1:{flower_port}"

    def flower_counts() -> tuple[float, float]:
        samples = scrape(f"{flower_url}/metrics", auth=LOGIN)
        return (
            value_or_zero(samples, "flower_events_total", task="kcap.caption", type="task-succeeded"),
            value_or_zero(samples, "flower_events_total", task="kcap.route_batch", type="task-succeeded"),
        )

    # One route message per caption batch: between one and five for five images.
    wait_for(
        lambda: flower_counts()[0] == 5 and 1 <= flower_counts()[1] <= 5,
        timeout_s=30,
        what="Flower's task counts",
        logs=procs.tail,
    )
    samples = scrape(f"{flower_url}/metrics", auth=LOGIN)
    assert value(samples, "flower_events_total", worker=f"cpu@{HOST}", task="kcap.caption") >= 5
    assert value(samples, "flower_events_total", worker=f"route@{HOST}", task="kcap.route_batch") >= 1
    status, body = http_get(f"{flower_url}/api/workers?refresh=1", auth=LOGIN)
    assert status == 200, body
    assert {f"cpu@{HOST}", f"route@{HOST}"} <= set(json.loads(body))
    assert http_get(f"{flower_url}/api/workers")[0] == 401  # no login, no API
    # Flower's search finds a file's tasks by its name (argsrepr): its caption and its route.
    source = str(found["output"][0]["source"])
    status, body = http_get(f"{flower_url}/api/tasks?search={source}", auth=LOGIN)
    assert status == 200, body
    tasks = json.loads(body).values()
    assert {task["name"] for task in tasks} == {"kcap.caption", "kcap.route_batch"}, body
    assert all(source in task["args"] and "image_b64" not in task["args"] for task in tasks), body
    # Flower's broker view reads the queues over the same (unix-socket) URL.
    status, body = http_get(f"{flower_url}/api/queues/length", auth=LOGIN)
    assert status == 200, body
    assert {q["name"] for q in json.loads(body)["active_queues"]} >= {"caption", "route"}
    assert LOGIN not in Path(f"/proc/{flower.pid}/cmdline").read_text()

    # kcap's own metrics: each worker process serves what it did.
    routed = scrape(f"http://127.0.0.1:{route_port}/metrics")
    assert value(routed, "kcap_images_routed_total", outcome="output") == 5
    assert value(routed, "kcap_images_routed_total", outcome="clip_failed") == 0
    assert value(routed, "kcap_images_routed_total", outcome="errors") == 0
    assert value(routed, "kcap_clip_score_count") == 5
    # The same five float64 scores (JSON and the exposition format round-trip a float
    # exactly), summed in another order: each sum of n rounds n - 1 times at the size of the
    # sum of |scores|.
    scores = [float(r["clip_score"]) for r in found["output"]]
    assert value(routed, "kcap_clip_score_sum") == pytest.approx(
        sum(scores), rel=0, abs=2 * float64_error(len(scores) - 1, magnitude=sum(map(abs, scores)))
    )
    assert value(routed, "kcap_end_to_end_latency_seconds_count") == 5
    assert value(routed, "kcap_worker_info", worker=f"route@{HOST}", role="route") == 1
    captioned = scrape(f"http://127.0.0.1:{caption_port}/metrics")
    assert value(captioned, "kcap_images_captioned_total") == 5
    assert value(captioned, "kcap_batch_size_sum") == 5
    assert 1 <= value(captioned, "kcap_batch_size_count") <= 5
    assert value(captioned, "kcap_batch_seconds_count") == value(captioned, "kcap_batch_size_count")
    assert value(captioned, "kcap_batch_failures_total") == 0
    assert value(captioned, "kcap_gpu_memory_allocated_bytes") == 0  # a CPU worker
    assert value(captioned, "kcap_worker_info", worker=f"cpu@{HOST}", device="cpu") == 1

    # kcap status agrees.
    report = kcap_status({**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)})
    assert report["outcomes"] == {"output": 5, "clip_failed": 0, "errors": 0}
    assert report["routed"] == 5 and report["in_flight"] == 0 and report["unacked"] == 0
    assert report["queues"] == {
        "caption": {"waiting": 0, "held_by_workers": 0},
        "route": {"waiting": 0, "held_by_workers": 0},
        "shards": {"waiting": 0, "held_by_workers": 0},
    }
    assert report["images_per_s"] > 0 and report["eta_s"] == 0.0
    assert "://:***@" in str(report["broker"]) and settings.broker_url not in str(report["broker"])


def _flower_off_loopback(settings: Settings, login: str | None) -> subprocess.CompletedProcess[str]:
    """`kcap flower` on 0.0.0.0 with this login (None: none at all), as a person starts it."""
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
    env.pop("KCAP_FLOWER_BASIC_AUTH", None)
    if login is not None:
        env["KCAP_FLOWER_BASIC_AUTH"] = login
    argv = ["flower", "--flower-address", "0.0.0.0", "--flower-port", str(free_port())]
    return kcap_to_the_end(env, *argv)


def test_flower_off_loopback_refuses_to_start_without_a_login(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    done = _flower_off_loopback(make_settings(broker_url=redis_url), None)
    assert done.returncode == 2, done.stderr
    assert "refusing to start Flower on 0.0.0.0 without a password" in done.stderr
    assert "KCAP_FLOWER_BASIC_AUTH" in done.stderr
    assert "Traceback" not in done.stderr


def test_flower_off_loopback_asks_for_the_login_and_keeps_it_off_the_command_line(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url)
    port = free_port()
    flower = procs.kcap(
        "flower",
        "--flower-address",
        "0.0.0.0",
        "--flower-port",
        str(port),
        settings=settings,
        extra_env={"KCAP_FLOWER_BASIC_AUTH": LOGIN},
    )
    wait_for(_flower_is_up(port), timeout_s=60, what="Flower up", logs=procs.tail)
    base = f"http://127.0.0.1:{port}"
    assert http_get(f"{base}/")[0] == 401
    assert http_get(f"{base}/api/workers")[0] == 401
    assert http_get(f"{base}/", auth="kcap-test:wrong")[0] == 401
    assert http_get(f"{base}/", auth=LOGIN)[0] == 200
    # Off loopback, Flower's own /metrics and /healthcheck want the login too.
    for path in ("/metrics", "/healthcheck"):
        assert http_get(f"{base}{path}")[0] == 401, path
        assert http_get(f"{base}{path}", auth="kcap-test:wrong")[0] == 401, path
        assert http_get(f"{base}{path}", auth=LOGIN)[0] == 200, path
    assert "flower_events_total" in http_get(f"{base}/metrics", auth=LOGIN)[1]
    assert http_get(f"{base}/healthcheck", auth=LOGIN)[1] == "OK"
    assert http_get(f"{base}/tasks", auth=LOGIN)[0] == 200  # the dashboard still works
    password = LOGIN.split(":", 1)[1]
    cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes().decode()
    assert "flower" in cmdline and password not in cmdline
    assert password not in procs.logs()


@pytest.mark.parametrize("login", [":", "admin:pw,x"])  # every other shape: tests/unit/test_settings.py
def test_flower_refuses_a_login_with_an_empty_user_or_password(
    make_settings: Callable[..., Settings], redis_url: str, login: str
) -> None:
    done = _flower_off_loopback(make_settings(broker_url=redis_url), login)
    assert done.returncode == 2, done.stderr
    assert "KCAP_FLOWER_BASIC_AUTH" in done.stderr and "user:password" in done.stderr
    assert "Traceback" not in done.stderr


def test_kcap_status_finds_the_embedded_broker_of_kcap_up(
    make_settings: Callable[..., Settings], procs: Processes
) -> None:
    settings = make_settings(threshold=1000.0)  # every image fails the CLIP check
    assert settings.broker_url is None and settings.state_dir is not None
    _drop(settings, 3, seed=43)
    procs.kcap("up", "--no-flower", settings=settings)
    broker_file = settings.state_dir / "broker_url"
    wait_for(broker_file.exists, timeout_s=60, what="kcap up's broker_url file", logs=procs.tail)
    wait_for(lambda: len(routed_sources(settings)) >= 3, timeout_s=120, what="3 routed", logs=procs.tail)

    # Only the state folder: no broker URL anywhere in the environment.
    env = {k: v for k, v in os.environ.items() if k != "KCAP_BROKER_URL"}
    env.update(PYTHONPATH=str(REPO), KCAP_STATE_DIR=str(settings.state_dir))
    wait_for(lambda: kcap_status(env)["routed"] == 3, timeout_s=20, what="status counts 3", logs=procs.tail)
    report = kcap_status(env)
    assert report["outcomes"] == {"output": 0, "clip_failed": 3, "errors": 0}
    assert report["in_flight"] == 0 and report["eta_s"] == 0.0
    text = kcap_to_the_end(env, "status")
    assert text.returncode == 0, text.stderr
    assert "clip-failed 3" in text.stdout and "queue       caption: 0 waiting" in text.stdout


def test_kcap_status_without_any_broker_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KCAP_BROKER_URL", raising=False)
    assert main(["status", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "KCAP_BROKER_URL" in err and "kcap up" in err and str(tmp_path / "broker_url") in err
