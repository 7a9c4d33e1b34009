"""What the dataset-mode benchmark's parts share: the plan, the models, the settings, a
redis-server of its own (so `INFO stats` can be read), and `kcap run` as a sampled process tree."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks import harness
from tests.benchmarks.cpu_e2e import _start_kcap

REPO = Path(__file__).resolve().parents[2]
THREADS = 1
BATCH = 64
NEW_TOKENS = 1


@dataclass(frozen=True)
class ShardPlan:
    images: int = 20_000
    shards: int = 20


def models(workdir: Path) -> dict[str, Path]:
    return {"kosmos": workdir / "models" / "kosmos2-tiny", "clip": workdir / "models" / "clip-tiny"}


def bench_settings(workdir: Path, **more: Any) -> Any:
    from shared.core.settings import Settings

    paths = models(workdir)
    return Settings(
        caption_model=str(paths["kosmos"]),
        clip_model=str(paths["clip"]),
        max_new_tokens=NEW_TOKENS,
        batch_size=BATCH,
        gpus="cpu",
        # Like (q): the worker streams these jobs through kcap's static decoder, whose slots
        # are its batch (at 1 new token every row ends at its prefill); at the default 32
        # slots it would run batches of 32 against (q)'s 64.
        decoder_slots=BATCH,
        **more,
    )


def start_redis(base: Path) -> Any:
    from shared.core.embedded_redis import EmbeddedRedis

    return EmbeddedRedis(base / "redis", admin_password=secrets.token_hex(16)).start()


def net_bytes(admin: Any) -> tuple[int, int]:
    stats = admin.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


def kcap_run(base: Path, settings: Any, args: list[str], *, watch: Any = None) -> dict[str, Any]:
    """`kcap run args` with settings, its process tree sampled; wall, CPU by role, peak RSS."""
    env = {**os.environ, **settings.to_env(), **harness.thread_env(THREADS), "PYTHONPATH": str(REPO)}
    with (base / "kcap-run.log").open("wb") as log:
        started = time.perf_counter()
        process = _start_kcap(["run", *args], env, log)
        with harness.TreeRssSampler(process.pid) as sampler:
            extra = watch(process, sampler) if watch is not None else {}
            returncode = process.wait(timeout=24 * 3600)
        wall_s = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(
            f"kcap run exited {returncode}; log:\n{(base / 'kcap-run.log').read_text()[-4000:]}"
        )
    return {
        "wall_s": wall_s,
        "cpu_by_role": sampler.cpu_by_role(),
        "peak_tree_rss": sampler.peak_bytes,
        **extra,
    }
