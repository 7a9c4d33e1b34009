"""`--compile` on tiny real models: the same captions as eager, and a clear error where the
host cannot compile. Real torch.compile with inductor and the host's C++ compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from shared.core.messages import CaptionOptions
from shared.core.settings import Settings
from tests.integration.helpers import image_bytes
from tests.unit.test_models import _job
from workers.captioning.engine import Engine
from workers.tiny.images import tiny_images

REPO = Path(__file__).resolve().parents[2]
# torch.compile builds kernels with the host compiler: tens of seconds on these cores.
pytestmark = pytest.mark.slow
OPTIONS = CaptionOptions(prompts=(Settings().prompts[0],), max_new_tokens=10, score=False)


def _settings(tiny_models: tuple[Path, Path], **more: object) -> Settings:
    kosmos, clip = tiny_models
    return Settings(caption_model=str(kosmos), clip_model=str(clip), dtype="float32", **more)  # type: ignore[arg-type]


def test_compiled_captions_equal_eager_ones_at_every_batch_size(
    tiny_models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One compile thread: inductor's parallel compile pool would outlive the test (and the
    # leaked-thread check); a worker process keeps that pool for its lifetime anyway.
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)
    eager = Engine.load(_settings(tiny_models), eager_scorer=False)
    compiled = Engine.load(_settings(tiny_models, compile=True), eager_scorer=False)
    model = compiled.captioner.model
    # Module.compile leaves its mark: proof that the compiled path is the one measured.
    assert model.vision_model._compiled_call_impl is not None
    assert model.text_model._compiled_call_impl is not None
    assert eager.captioner.model.text_model._compiled_call_impl is None

    jobs = [_job(image_bytes(im), f"{i}.png", score=False) for i, im in enumerate(tiny_images(7, seed=11))]
    frames_compiled = sum(counters["frames"].values())
    # Sizes the warm-up did not run: the graphs built at start serve them.
    for size in (7, 5, 1):
        batch = jobs[:size]
        want = [c.text for c in eager.run_batch(OPTIONS, [eager.prepare(j) for j in batch])]
        got = [c.text for c in compiled.run_batch(OPTIONS, [compiled.prepare(j) for j in batch])]
        assert got == want, f"batch of {size}"
        if size == 7:
            assert len(set(want)) > 1  # images get different captions: a mix-up would show
    # No batch waited on a compile: everything was built before the first job.
    assert sum(counters["frames"].values()) == frames_compiled, dict(counters["frames"])


@pytest.mark.timeout(300)
def test_a_host_without_a_compiler_stops_the_worker_with_a_clear_error(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **_settings(tiny_models, compile=True, gpus="cpu", broker_url="redis://127.0.0.1:9/0").to_env(),
        "PYTHONPATH": str(REPO),
        # A real missing compiler, as in a slim container image; a fresh inductor cache, so no
        # kernel built by an earlier test can stand in for the compiler.
        "CXX": str(tmp_path / "no-such-g++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "worker-process"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "kcap: error: --compile: torch.compile failed on this host" in done.stderr
    assert "Run without --compile (KCAP_COMPILE=0)" in done.stderr
