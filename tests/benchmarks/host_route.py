"""(s) the route worker alone, fed a full route queue: how many images one storage host files
per second, at this disk's own fsync speed and with a slow fsync (network storage).

The results are queued first, with the route worker stopped; then `kcap router` starts and is
timed from the first image filed to the last (its start-up is not in the figure). The slow
fsync is injected in the benchmark only: a sitecustomize on the route worker's PYTHONPATH
wraps os.fsync with a fixed sleep, as an NFS round trip would add.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.core.celery_app import make_app
from shared.core.embedded_redis import EmbeddedRedis
from shared.core.messages import Result
from shared.core.naming import job_id_for
from shared.core.publisher import CeleryPublisher
from shared.core.settings import Settings
from tests.benchmarks import harness

REPO = Path(__file__).resolve().parents[2]

_SLOW_FSYNC = '''"""Benchmark only: every os.fsync takes {delay_ms} ms longer, as on network storage."""
import os
import time

_fsync = os.fsync


def _slow_fsync(fd):
    time.sleep({delay_s})
    return _fsync(fd)


os.fsync = _slow_fsync
'''


def route_alone(
    base: Path, images: list[Path], *, fsync_delay_ms: float = 0.0, per_message: int = 1
) -> dict[str, Any]:
    """File len(images) queued results with `kcap router`, per_message results in each route
    message (1: `kcap.route`; more: `kcap.route_batch`, as a caption batch sends them);
    images/s and CPU ms per image."""
    shutil.rmtree(base, ignore_errors=True)
    inbox = base / "inbox"
    inbox.mkdir(parents=True)
    for path in images:
        shutil.copy2(path, inbox / path.name)
    redis = EmbeddedRedis(base / "redis").start()
    try:
        settings = Settings(
            broker_url=redis.url,
            input_dir=inbox,
            output_dir=base / "captioned",
            clip_failed_dir=base / "clip_failed",
            errors_dir=base / "errors",
            state_dir=base / "state",
        )
        _queue_results(settings, images, per_message)
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO)}
        if fsync_delay_ms:
            shim = base / "slow-fsync"
            shim.mkdir()
            (shim / "sitecustomize.py").write_text(
                _SLOW_FSYNC.format(delay_ms=fsync_delay_ms, delay_s=fsync_delay_ms / 1000)
            )
            env["PYTHONPATH"] = f"{shim}{os.pathsep}{REPO}"
        return _time_router(settings, env, len(images), base / "router.log")
    finally:
        redis.stop()


def _queue_results(settings: Settings, images: list[Path], per_message: int) -> None:
    app = make_app(settings)
    publisher = CeleryPublisher(app, caption_queue=settings.caption_queue, route_queue=settings.route_queue)
    results: list[Result] = []
    for i, path in enumerate(images):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        result = Result(
            job_id=job_id_for(path.name, sha),
            rel_path=path.name,
            content_sha256=sha,
            ok=True,
            caption=f"a small test image number {i}",
            score=20.0 if i % 2 else 10.0,  # half to output, half to clip-failed
            enqueued_at=time.time(),
        )
        results.append(result)
    for start in range(0, len(results), per_message):
        chunk = results[start : start + per_message]
        if per_message == 1:
            publisher.send_result(chunk[0], queue=settings.route_queue)
        else:
            publisher.send_results(chunk, queue=settings.route_queue)
    app.close()


def _time_router(settings: Settings, env: dict[str, str], count: int, log_path: Path) -> dict[str, Any]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli.main", "router"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with harness.TreeRssSampler(process.pid) as sampler:
                deadline = time.monotonic() + 1800
                while _records(settings) < count:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"kcap router stopped early; log:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.2)
                cpu = sampler.cpu_by_role()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    routed_at = _routed_at(settings)
    wall_s = max(routed_at) - min(routed_at)
    return {
        "images": count,
        "routed": len(routed_at),
        "wall_s": wall_s,
        "images_per_s": (count - 1) / wall_s if wall_s > 0 else 0.0,
        "cpu_ms_per_image": 1000 * sum(cpu.values()) / count,
        "cpu_by_role": cpu,
        "peak_tree_rss": sampler.peak_bytes,
    }


def _record_paths(settings: Settings) -> list[Path]:
    found = []
    for root in (settings.output_dir, settings.clip_failed_dir):
        if root is not None and root.exists():
            found += [p for p in root.glob("*.json") if not p.name.startswith(".")]
    return found


def _records(settings: Settings) -> int:
    return len(_record_paths(settings))


def _routed_at(settings: Settings) -> list[float]:
    return [float(json.loads(p.read_text())["routed_at"]) for p in _record_paths(settings)]
