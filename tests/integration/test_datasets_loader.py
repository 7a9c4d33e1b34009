"""The output folder loads with Hugging Face `datasets` (imagefolder + metadata.jsonl)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.core.messages import Result
from shared.core.naming import job_id_for
from shared.core.settings import Settings
from tests.integration.helpers import image_bytes
from workers.routing.router import Router
from workers.tiny.images import tiny_images


def test_load_dataset_imagefolder_reads_every_routed_image_with_its_caption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings = Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        clip_failed_dir=tmp_path / "failed",
        threshold=15.0,
        caption_prefix="kcap, ",
    )
    assert settings.input_dir is not None
    router = Router(settings)
    expected: dict[str, str] = {}
    for i, image in enumerate(tiny_images(6, seed=2)):
        rel = f"{'sub/' if i % 2 else ''}img{i}.png"
        data = image_bytes(image)
        (settings.input_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings.input_dir / rel).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        caption = f"caption number {i}"
        job_id = job_id_for(rel, sha)
        result = Result(job_id=job_id, rel_path=rel, content_sha256=sha, ok=True, caption=caption, score=20.0)
        router.route(result)
        router.route(result)  # a retry must not add a second row
        expected[rel] = f"kcap, {caption}"

    dataset = datasets.load_dataset("imagefolder", data_dir=str(settings.output_dir), split="train")
    assert len(dataset) == 6
    texts = sorted(dataset["text"])
    assert texts == sorted(expected.values())
    assert all(row["image"].size == (64, 48) for row in dataset)
