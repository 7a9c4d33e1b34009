"""Caption adapters by family, on tiny real checkpoints of each family (no hub, no mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.core.errors import ConfigError
from shared.core.prompts import DEFAULT_PROMPT, PRESETS
from workers.captioning.families.base import CaptionAdapter, family_prompt, preset_name
from workers.captioning.families.registry import check_family, load_captioner, model_type_of, supported
from workers.tiny.families import CAPTIONERS
from workers.tiny.images import tiny_images

FAMILIES = sorted(CAPTIONERS)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build(root / family) for family, build in CAPTIONERS.items()}


def _load(path: Path, *, max_image_tokens: int = 1280) -> CaptionAdapter:
    return load_captioner(str(path), device=CPU, dtype=torch.float32, max_image_tokens=max_image_tokens)


def _caption(adapter: CaptionAdapter, images: list, *, prompt: str = DEFAULT_PROMPT) -> list[str]:
    items = [adapter.preprocess(image) for image in images]
    ids = adapter.forward(items, prompt=prompt, max_new_tokens=8)
    return [c.text for c in adapter.postprocess(ids, max_new_tokens=8)]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_its_adapter_and_batches_caption_as_single_images_do(
    family: str, checkpoints: dict[str, Path]
) -> None:
    adapter = _load(checkpoints[family])
    assert adapter.family == family
    # Different sizes: tiling families give rows of different lengths (left padding).
    images = tiny_images(4, seed=5, size=(64, 48))
    images[1] = images[1].resize((40, 96))
    batched = _caption(adapter, images)
    single = [_caption(adapter, [image])[0] for image in images]
    assert batched == single  # greedy: a batch writes what single images write
    assert all(batched), batched
    assert len(set(batched)) > 1, batched  # the captions depend on the images


@pytest.mark.parametrize("family", FAMILIES)
def test_presets_map_to_the_family_form_and_free_text_is_kept(
    family: str, checkpoints: dict[str, Path]
) -> None:
    adapter = _load(checkpoints[family])
    detailed = adapter.prompt_for(PRESETS["detailed"])
    brief = adapter.prompt_for("brief")
    free = "a photo of"
    assert adapter.prompt_for(free) == free
    if family == "kosmos-2":
        assert detailed == DEFAULT_PROMPT  # today's prompt, untouched
    elif family == "florence-2":
        assert (detailed, brief) == ("<MORE_DETAILED_CAPTION>", "<CAPTION>")
    elif family == "blip-2":
        assert (detailed, brief) == ("Question: Describe this image in detail. Answer:", "")
    else:
        assert detailed != DEFAULT_PROMPT and brief != detailed
    # The brief form writes a caption too.
    assert _caption(adapter, tiny_images(1, seed=9), prompt=PRESETS["brief"])[0]


def test_preset_recognised_by_name_or_kosmos_text() -> None:
    assert preset_name("detailed") == preset_name(DEFAULT_PROMPT) == "detailed"
    assert preset_name("something else") is None
    forms = {"detailed": "D", "brief": "B"}
    assert family_prompt(PRESETS["grounded-detailed"], forms) == "D"  # grounding is Kosmos-2's
    assert family_prompt("write a poem", forms) == "write a poem"


def test_an_unsupported_model_type_fails_with_the_supported_families(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as error:
        check_family("paligemma", source="some/model")
    message = str(error.value)
    assert "'paligemma'" in message
    for family in (
        "kosmos-2",
        "florence-2",
        "qwen2.5-vl",
        "qwen3-vl",
        "llava",
        "idefics3",
        "smolvlm",
        "blip-2",
    ):
        assert family in message
    assert model_type_of(str(checkpoints["llava"])) == "llava"
    assert set(supported()) >= {"kosmos-2", "florence2", "qwen2_5_vl", "qwen3_vl", "llava", "idefics3"}


def test_a_family_whose_extra_is_missing_fails_with_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "num2words" else real(name))
    with pytest.raises(ConfigError, match=r"needs num2words.*pip install 'kcap\[models\]'"):
        check_family("smolvlm", source="HuggingFaceTB/SmolVLM2-2.2B-Instruct")


# The families whose processor also takes video: loaded without it, so without torchvision.
VIDEO_FAMILIES = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "smolvlm", "llava-onevision")


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_a_processor_that_also_takes_video_loads_without_its_video_part(
    family: str, checkpoints: dict[str, Path]
) -> None:
    import transformers

    adapter = _load(checkpoints[family])
    processor = adapter.processor  # type: ignore[attr-defined]
    # The family's own processor class (its token expansion and chat template), less the
    # video processor: the part that needs torchvision.
    real = getattr(transformers, type(processor).__name__)
    assert isinstance(processor, real)
    assert "video_processor" in real.get_attributes()
    assert "video_processor" not in type(processor).get_attributes()
    assert type(processor.image_processor).__name__.endswith("ImageProcessorPil")


def test_a_checkpoint_saved_with_its_video_processor_loads_without_it(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """transformers 5 on a host with torchvision saves every part into processor_config.json,
    the video processor's settings among them: they are read past, not loaded."""
    import json
    import shutil

    folder = tmp_path / "qwen2.5-vl-saved-with-video"
    shutil.copytree(checkpoints["qwen2.5-vl"], folder)
    images = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").unlink()
    video = {"video_processor_type": "Qwen2VLVideoProcessor", "patch_size": 8, "merge_size": 2}
    config = {"processor_class": "Qwen2_5_VLProcessor", "image_processor": images, "video_processor": video}
    (folder / "processor_config.json").write_text(json.dumps(config))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video))

    adapter = _load(folder)
    assert adapter.processor.image_processor.patch_size == 8  # type: ignore[attr-defined]
    assert _caption(adapter, tiny_images(2, seed=4)) == _caption(
        _load(checkpoints["qwen2.5-vl"]), tiny_images(2, seed=4)
    )


# OneVision's cap counts its hub crop (384 px for 729 tokens): at the tiny model's 32 px crops
# only a cap of a few tokens shrinks the 256 x 192 photo enough to pick a smaller grid.
@pytest.mark.parametrize(
    ("family", "token", "cap"), [("qwen2.5-vl", "<|image_pad|>", 16), ("llava-onevision", "<image>", 4)]
)
def test_the_image_token_cap_shrinks_a_big_photo_for_dynamic_resolution_families(
    family: str, token: str, cap: int, checkpoints: dict[str, Path]
) -> None:
    roomy = _load(checkpoints[family])
    capped = _load(checkpoints[family], max_image_tokens=cap)
    photo = tiny_images(1, seed=3, size=(256, 192))[0]

    def tokens(adapter: CaptionAdapter) -> int:
        processor = adapter.processor  # type: ignore[attr-defined]
        text = adapter._chat_text(DEFAULT_PROMPT)  # type: ignore[attr-defined]
        encoded = processor(text=[text], images=[adapter.preprocess(photo)], return_tensors="pt")
        return int((encoded["input_ids"] == processor.tokenizer.convert_tokens_to_ids(token)).sum())

    if family == "qwen2.5-vl":
        assert tokens(capped) <= cap < tokens(roomy)
    else:  # approximate for OneVision (its grid sets the crops), yet fewer
        assert tokens(capped) < tokens(roomy)


@pytest.mark.parametrize(("processor_class", "patch"), [("Qwen2VLImageProcessorPil", 14)])
def test_the_image_token_cap_bounds_a_24_mp_photo_for_qwen_vl(processor_class: str, patch: int) -> None:
    """At the hub checkpoints' patch size and bounds, on the real image processor (the part the
    cap sets; the model is not needed)."""
    import transformers
    from PIL import Image

    from workers.captioning.families.qwen_vl import QwenVLCaptioner

    # The hub checkpoints' bounds: up to 16,384 tokens (12.8 MP) per image.
    hub_size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
    images = getattr(transformers, processor_class)(patch_size=patch, merge_size=2, size=hub_size)

    class _Processor:
        image_processor = images

    captioner = object.__new__(QwenVLCaptioner)  # no model: only the cap and preprocess run
    captioner.processor = _Processor()
    captioner.max_image_tokens = 1280
    captioner.cap_image_tokens(1280)
    photo = Image.new("RGB", (6000, 4000), (200, 120, 40))  # 24 MP
    shrunk = captioner.preprocess(photo)
    assert shrunk.width * shrunk.height <= 1280 * (2 * patch) ** 2
    grid = images(images=[shrunk], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // 4 <= 1280  # image tokens after the 2 x 2 merge
    uncapped = getattr(transformers, processor_class)(patch_size=patch, merge_size=2, size=hub_size)
    assert int(uncapped(images=[photo], return_tensors="pt")["image_grid_thw"][0].prod()) // 4 > 1280


def test_compile_is_refused_at_start_for_a_family_other_than_kosmos2(checkpoints: dict[str, Path]) -> None:
    from shared.core.settings import Settings
    from workers.captioning.families.registry import load_for_settings

    settings = Settings(caption_model=str(checkpoints["llava"]), compile=True)
    with pytest.raises(ConfigError, match="--compile supports Kosmos-2 only, not llava"):
        load_for_settings(settings, device=CPU, dtype=torch.float32)


def test_a_chat_checkpoint_without_a_chat_template_is_refused_at_start(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    bare = tmp_path / "llava-base"
    shutil.copytree(checkpoints["llava"], bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ConfigError, match=r"\(llava\) has no chat template"):
        _load(bare)
