"""The live display's rate and ETA: the current pace, not an average that counts the models'
loading time as slow work."""

from __future__ import annotations

import re
import time
from pathlib import Path

from shared.cli.progress import Progress
from shared.core.inflight import InFlight
from shared.core.outcomes import Outcome
from shared.core.settings import Settings


def _route(inflight: InFlight, prefix: str, n: int) -> None:
    for i in range(n):
        inflight.try_add(f"{prefix}{i:031x}", f"{prefix}-{i}.png")
        inflight.record_outcome(f"{prefix}{i:031x}", Outcome.OUTPUT)


def test_the_live_rate_is_the_current_pace_and_the_eta_follows_it(redis_url: str, tmp_path: Path) -> None:
    inflight = InFlight.connect(Settings(broker_url=redis_url))
    progress = Progress(title="test", log_dir=tmp_path, live=False)
    progress.watch(inflight)
    time.sleep(2.0)  # the workers load their models: nothing is routed
    first_batch = time.time()
    _route(inflight, "a", 10)
    first_done = time.time()
    time.sleep(1.0)
    _route(inflight, "b", 10)  # the second batch: 10 images a second
    for i in range(30):
        inflight.try_add(f"c{i:031x}", f"c-{i}.png")
    before = time.time()
    line = progress._snapshot_line()
    after = time.time()
    rate = float(re.search(r"([0-9.]+) img/s \(last 10s\)", line).group(1))  # type: ignore[union-attr]
    # The clock starts at the first batch (routed between first_batch and first_done); the
    # second batch's 10 images count over the time since. Two decimals shown: +-0.005.
    assert 10 / (after - first_batch) - 0.005 <= rate <= 10 / (before - first_done) + 0.005, line
    eta = int(re.search(r"ETA (\d+)s", line).group(1))  # type: ignore[union-attr]
    assert round(30 / (10 / (after - first_batch))) >= eta >= round(30 / (10 / (before - first_done))), line
    assert "output 20" in line and "in flight 30" in line
    progress.close()
    inflight._redis.close()


def test_a_lone_batch_counts_over_the_window(redis_url: str) -> None:
    inflight = InFlight.connect(Settings(broker_url=redis_url))
    assert inflight.rate(10.0) == 0.0
    _route(inflight, "a", 4)
    snapshot = inflight.snapshot(window_s=10.0)
    # When its work began is unknown: at least 4 in the last 10 s.
    assert snapshot.images_per_s == 4 / 10.0 and snapshot.routed == 4
    inflight._redis.close()


def test_a_redis_down_as_the_display_starts_is_waited_for_not_a_crash(tmp_path: Path) -> None:
    """`kcap up` starts its display as the stack comes up; the embedded Redis may be down
    right then (killed, restarting): the display says so and reads the counts once it is back."""
    import secrets
    import signal

    from shared.core.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis", admin_password=secrets.token_hex(16)).start()
    try:
        inflight = InFlight.connect(Settings(broker_url=server.url))
        assert server._process is not None
        server._process.send_signal(signal.SIGKILL)
        server._process.wait()
        progress = Progress(title="test", log_dir=tmp_path, live=False)
        progress.watch(inflight)  # no raise
        assert progress._snapshot_line().startswith("waiting for Redis")
        server.start()  # as the stack brings it back
        assert "output 0" in progress._snapshot_line()
        _route(inflight, "new", 2)
        assert "output 2" in progress._snapshot_line()
        progress.close()
        assert progress.run_counts() == {Outcome.OUTPUT: 2, Outcome.CLIP_FAILED: 0, Outcome.ERRORS: 0}
        inflight._redis.close()
    finally:
        server.close()
