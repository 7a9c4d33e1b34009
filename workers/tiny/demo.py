"""A demo folder that shows kcap's whole flow in under a minute, with no model hub: tiny random
models, a few dozen images (one of them unreadable, one in a sub-folder) and the folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.tiny.images import tiny_images


@dataclass(frozen=True)
class Demo:
    root: Path
    caption_model: Path
    clip_model: Path
    inbox: Path
    captioned: Path
    clip_failed: Path
    errors: Path
    state: Path


def demo_paths(root: Path) -> Demo:
    """Where a demo folder keeps its models, images and results (nothing is made)."""
    return Demo(
        root=root,
        caption_model=root / "models" / "kosmos2",
        clip_model=root / "models" / "clip",
        inbox=root / "inbox",
        captioned=root / "captioned",
        clip_failed=root / "clip_failed",
        errors=root / "errors",
        state=root / ".kcap",
    )


def prepare_demo(root: Path, *, images: int = 24) -> Demo:
    """Build (or reuse) the tiny models and fill root/inbox with images, plus one unreadable
    file (images + 1 inputs in all); returns the paths."""
    # The model stack loads only when models are built: the paths above need none of it.
    from workers.tiny.clip import build_clip
    from workers.tiny.kosmos2 import build_kosmos2

    demo = demo_paths(root.expanduser().resolve())
    if not (demo.caption_model / "config.json").exists():
        build_kosmos2(demo.caption_model)
    if not (demo.clip_model / "config.json").exists():
        build_clip(demo.clip_model)
    (demo.inbox / "trip").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(tiny_images(images, seed=2026, size=(320, 240))):
        folder = demo.inbox / "trip" if i % 4 == 3 else demo.inbox
        path = folder / f"demo-{i:02d}.{'jpg' if i % 2 else 'png'}"
        if not path.exists():
            image.save(path, quality=90)
    # What a half-copied download looks like: it lands in errors/ with a reason.
    broken = demo.inbox / "broken.jpg"
    if not broken.exists():
        broken.write_bytes(b"\xff\xd8\xff\xe0 this file was cut off mid-copy")
    return demo
