"""The tiny engine and a batcher over it, for the tests of what runs around the engine (the
caption task, the shard pipeline). A module that needs another engine defines its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.core.messages import CaptionOptions
from shared.core.settings import Settings
from workers.captioning.batcher import Batcher
from workers.captioning.engine import Captioned, Engine, Prepared


@pytest.fixture(scope="module")
def engine(tiny_models: tuple[Path, Path]) -> Engine:
    kosmos, clip = tiny_models
    return Engine.load(Settings(caption_model=str(kosmos), clip_model=str(clip)), eager_scorer=True)


@pytest.fixture
def batcher(engine: Engine) -> Iterator[Batcher[CaptionOptions, Prepared, Captioned]]:
    running = Batcher(engine.run_batch, max_size=4, max_wait_s=0.01).start()
    yield running
    running.stop()
