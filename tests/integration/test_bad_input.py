"""Bad and odd input through real processes: each file ends in exactly one folder, with a
reason when it is in errors; nothing is deleted; the worker keeps going afterwards.

Decode-level detail (pixel colours, sizes) is in tests/unit/test_decode.py; this checks that
every outcome survives the trip through watch -> Redis -> worker -> router.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from producer.enqueue import Enqueuer
from producer.scan import InputFilter
from shared.core.inflight import InFlight
from shared.core.naming import job_id_for
from shared.core.publisher import StubPublisher
from shared.core.settings import Settings
from tests.conftest import Processes, wait_for
from tests.integration.helpers import image_bytes, records, routed_sources
from tests.unit.test_decode import declared_png, exif_rotated_jpeg, tall_png, truncated_jpeg
from workers.tiny.images import tiny_images

UNICODE_NAME = "café ünï 日本 with  spaces.png"

# name -> a fragment its errors record's reason must hold.
REFUSED = {
    "empty.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated",
    "notes.jpg": "not an image",
    "bomb.png": "KCAP_MAX_PIXELS",
    "tall.png": "aspect ratio of 65000:1",
    "escape.jpg": "outside the input folder",
}
# Hidden, temporary and partial files: never inputs, never routed.
IGNORED = (".hidden.png", "photo.png.part", "photo.png~", ".DS_Store", "~draft.png", "sub/.cache.jpg")


def _encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _odd_but_valid(good: list[Image.Image]) -> dict[str, bytes]:
    """Valid images in awkward forms; each must be captioned and land in output."""
    rgba = good[2].convert("RGBA")
    rgba.putalpha(128)
    palette = good[3].convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    frames = [good[4], good[5]]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return {
        "good1.png": image_bytes(good[0]),
        "good2.jpg": image_bytes(good[1], "JPEG"),
        "cmyk.jpg": _encode(good[6].convert("CMYK"), "JPEG"),
        "deep16.png": _encode(Image.fromarray(np.asarray(good[7].convert("L"), np.uint16) * 257)),
        "palette.png": _encode(palette, transparency=0),
        "rgba.png": image_bytes(rgba),
        "anim.gif": gif.getvalue(),
        "rotated.jpg": exif_rotated_jpeg(6),  # stored 40x20, upright 20x40
        "one.png": image_bytes(Image.new("RGB", (1, 1), (200, 30, 30))),
        UNICODE_NAME: image_bytes(good[8]),
        "pair/a.jpg": image_bytes(good[9], "JPEG"),
        "pair/a.png": image_bytes(good[10]),
    }


def test_a_mixed_folder_of_bad_and_odd_files_each_gets_one_defined_outcome(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes, tmp_path: Path
) -> None:
    settings = make_settings(broker_url=redis_url)
    inbox = settings.input_dir
    assert inbox is not None and settings.errors_dir is not None and settings.output_dir is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    link_target = outside / "target.jpg"
    link_target.write_bytes(image_bytes(tiny_images(1, seed=99)[0], "JPEG"))
    target_before = (link_target.read_bytes(), os.stat(link_target).st_mtime_ns)

    good = tiny_images(12, seed=21)
    valid = _odd_but_valid(good)
    refused: dict[str, bytes] = {
        "empty.jpg": b"",
        "truncated.jpg": truncated_jpeg(),
        "notes.jpg": b"meeting notes, not a picture\n",
        "bomb.png": declared_png(40_000, 40_000),  # 1.6 G pixels declared in under 200 bytes
        # A real 1x65000 PNG of about 200 bytes, under the pixel cap: the processors would
        # scale it to 224 x 14.5 M pixels and the worker would be OOM-killed in a loop.
        "tall.png": tall_png(),
    }
    for rel, data in {**valid, **refused}.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    (inbox / "escape.jpg").symlink_to(link_target)
    for rel in IGNORED:
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(image_bytes(good[11]))

    procs.kcap("worker", settings=settings)
    # Several route threads: a.jpg and a.png routed at once must still get distinct stems.
    procs.kcap("router", settings=settings)
    watcher = procs.kcap("watch", settings=settings)
    # Deleted after its event but before the producer reads it (stable_after_s is 0.3 s).
    vanishing = inbox / "vanish.png"
    vanishing.write_bytes(image_bytes(good[11]))
    time.sleep(0.05)
    vanishing.unlink()

    expected = sorted([*valid, *REFUSED])
    wait_for(
        lambda: len(routed_sources(settings)) >= len(expected),
        timeout_s=60,
        what=f"{len(expected)} routed",
        logs=procs.logs,
    )
    # The worker survived all of that: a good image dropped now is still captioned.
    worker = procs.started[0]
    (inbox / "after.png").write_bytes(image_bytes(tiny_images(1, seed=77)[0]))
    wait_for(lambda: "after.png" in routed_sources(settings), timeout_s=30, what="after.png", logs=procs.logs)
    assert worker.poll() is None and watcher.poll() is None, procs.logs()
    time.sleep(0.5)  # room for a stray duplicate or an ignored file to show up, if one would

    assert routed_sources(settings) == sorted([*expected, "after.png"])  # each exactly once
    found = records(settings)
    assert not found["clip_failed"]  # threshold -1000: nothing fails the CLIP check

    # Errors: one record each, with the reason and the fields the brief asks for.
    by_source = {str(r["source"]): r for r in found["errors"]}
    assert sorted(by_source) == sorted(REFUSED)
    for rel, fragment in REFUSED.items():
        record = by_source[rel]
        assert fragment in str(record["reason"]), record
        assert record["error_class"] in ("BadImageError", "Refused"), record
        assert isinstance(record["time"], float) and len(str(record["content_sha256"])) == 64
        assert Path(str(record["_path"])) == settings.errors_dir / f"{rel}.error.json"
    for rel, data in refused.items():
        assert by_source[rel]["content_sha256"] == hashlib.sha256(data).hexdigest()
        assert (settings.errors_dir / rel).read_bytes() == data  # kept beside its reason
    # The link was refused without being followed: no copy, target untouched.
    assert by_source["escape.jpg"]["error_class"] == "Refused"
    assert str(link_target) in str(by_source["escape.jpg"]["reason"])
    assert not (settings.errors_dir / "escape.jpg").exists()
    assert (link_target.read_bytes(), os.stat(link_target).st_mtime_ns) == target_before

    # Output: every odd-but-valid image captioned, its bytes copied as they were.
    outputs = {str(r["source"]): r for r in found["output"]}
    assert sorted(outputs) == sorted([*valid, "after.png"])
    for rel, data in valid.items():
        record = outputs[rel]
        assert str(record["caption"]).strip(), record
        placed = Path(str(record["_path"])).with_name(str(record["image"]))
        assert placed.read_bytes() == data, rel
    assert (outputs["rotated.jpg"]["width"], outputs["rotated.jpg"]["height"]) == (20, 40)
    assert (outputs["one.png"]["width"], outputs["one.png"]["height"]) == (1, 1)
    assert outputs[UNICODE_NAME]["image"] == UNICODE_NAME
    # a.jpg and a.png: both routed, neither overwritten (the second takes a hash-suffixed stem).
    pair = settings.output_dir / "pair"
    names = {str(outputs[f"pair/{n}"]["image"]) for n in ("a.jpg", "a.png")}
    assert len({Path(n).stem for n in names}) == 2 and len(list(pair.glob("*.json"))) == 2
    assert len(list(pair.glob("*.txt"))) == 2

    # Nothing deleted: the input folder still holds every file, ignored ones included.
    for rel in [*valid, *refused, *IGNORED, "after.png"]:
        assert (inbox / rel).exists(), rel
    assert (inbox / "escape.jpg").is_symlink()
    assert not vanishing.exists() and "vanish.png" not in routed_sources(settings)
    assert "Traceback" not in procs.logs()


def test_hidden_and_temporary_names_are_not_inputs(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    inbox = settings.input_dir
    assert inbox is not None
    data = image_bytes(tiny_images(1)[0])
    for rel in (*IGNORED, "photo.png", "sub/photo.png", ".kcap-tmp-x-photo.png"):
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    walked = sorted(p.relative_to(inbox).as_posix() for p in InputFilter(settings).walk())
    assert walked == ["photo.png", "sub/photo.png"]


def _enqueuer(settings: Settings) -> tuple[Enqueuer, InFlight]:
    inflight = InFlight.connect(settings)
    return Enqueuer(settings, StubPublisher(), inflight), inflight


def test_a_file_deleted_before_it_is_read_is_logged_and_not_queued(
    make_settings: Callable[..., Settings], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(broker_url=redis_url)
    assert settings.input_dir is not None
    enqueuer, inflight = _enqueuer(settings)
    gone = settings.input_dir / "gone.png"  # its event came, then it was deleted
    with caplog.at_level(logging.INFO, logger="producer.enqueue"):
        outcome = enqueuer.offer(gone, "gone.png")
    assert outcome.status == "vanished"
    assert "gone.png vanished before it was read" in caplog.text
    assert inflight.size() == 0


@pytest.mark.parametrize("follow", [False, True])
def test_a_symlink_out_of_the_input_folder_needs_follow_symlinks(
    make_settings: Callable[..., Settings], redis_url: str, tmp_path: Path, follow: bool
) -> None:
    settings = make_settings(broker_url=redis_url, follow_symlinks=follow)
    assert settings.input_dir is not None
    target = tmp_path / "elsewhere.png"
    target.write_bytes(image_bytes(tiny_images(1)[0]))
    (settings.input_dir / "link.png").symlink_to(target)
    enqueuer, inflight = _enqueuer(settings)
    outcome = enqueuer.offer(settings.input_dir / "link.png", "link.png")
    assert outcome.status == ("queued" if follow else "refused")
    assert inflight.contains(outcome.job_id)
    if follow:  # the job carries the target's bytes, so its hash is theirs
        expected = hashlib.sha256(target.read_bytes()).hexdigest()
        assert outcome.job_id == job_id_for("link.png", expected)
