"""Rebuild docs/flower.png: Flower showing kcap's workers and tasks after a small real run.

    .venv/bin/python docs/flower_screenshot.py            # needs Debian's chromium
    apt-get install -y chromium fonts-dejavu-core         # once, if it is missing

It starts a private Redis, tiny models (tests/modelfactory.py), `kcap flower`, a caption
worker, the route worker and the watcher on a temporary folder, drops a few images (and one
broken file, so that the errors outcome shows too), waits until Flower has seen every task,
then has headless Chromium photograph Flower's pages. Everything stays on loopback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from shared.core.settings import Settings  # noqa: E402
from tests.chromium import chromium_binary, run_chromium  # noqa: E402
from tests.conftest import Processes, wait_for  # noqa: E402
from tests.integration.helpers import image_bytes, routed_sources  # noqa: E402
from tests.integration.monitoring import answers, scrape, value  # noqa: E402
from workers.tiny.clip import build_clip  # noqa: E402
from workers.tiny.images import tiny_images  # noqa: E402
from workers.tiny.kosmos2 import build_kosmos2  # noqa: E402

PAGES = {"flower.png": "/tasks", "flower-workers.png": "/workers"}
MAX_BYTES = 500 * 1024


def screenshot(url: str, out: Path, *, width: int = 1400, height: int = 900) -> None:
    with tempfile.TemporaryDirectory(prefix="kcap-chromium-") as profile:
        # A longer budget than the report test's: Flower loads its tasks table over XHR.
        done = run_chromium(
            url, Path(profile), f"--window-size={width},{height}", f"--screenshot={out}", budget_ms=8000
        )
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")


def run(out_dir: Path, *, images: int) -> list[Path]:
    if chromium_binary() is None:
        raise SystemExit("no chromium: apt-get install -y chromium fonts-dejavu-core")
    with tempfile.TemporaryDirectory(prefix="kcap-shot-") as tmp:
        root = Path(tmp)
        redis = EmbeddedRedis(root / "redis").start()
        procs = Processes(root)
        try:
            settings = Settings(
                broker_url=redis.url,
                input_dir=root / "inbox",
                output_dir=root / "captioned",
                clip_failed_dir=root / "clip_failed",
                errors_dir=root / "errors",
                state_dir=root / "state",
                caption_model=str(build_kosmos2(root / "kosmos2", preset="tiny")),
                clip_model=str(build_clip(root / "clip", preset="tiny")),
                max_new_tokens=12,
                threshold=0.0,
                gpus="cpu",
                batch_size=4,
                stable_after_s=0.3,
            )
            assert settings.input_dir is not None
            settings.input_dir.mkdir()
            port = free_port()
            procs.kcap("flower", "--flower-port", str(port), settings=settings)
            procs.kcap("worker", settings=settings)
            procs.kcap("router", settings=settings)
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: answers(f"{base}/healthcheck"), timeout_s=60, what="Flower", logs=procs.tail)
            procs.kcap("watch", settings=settings)
            for i, image in enumerate(tiny_images(images, seed=7)):
                (settings.input_dir / f"photo-{i:02d}.png").write_bytes(image_bytes(image))
            (settings.input_dir / "broken.png").write_bytes(b"\x89PNG not really")
            total = images + 1

            def seen_by_flower() -> bool:
                samples = scrape(f"{base}/metrics")
                done = {
                    task: value(samples, "flower_events_total", task=task, type="task-succeeded")
                    for task in ("kcap.caption", "kcap.route_batch")
                }
                return done["kcap.caption"] >= images and done["kcap.route_batch"] >= 1

            wait_for(
                lambda: len(routed_sources(settings)) >= total, timeout_s=180, what="routed", logs=procs.tail
            )
            wait_for(seen_by_flower, timeout_s=60, what="Flower's events", logs=procs.tail)
            time.sleep(2)  # one more heartbeat, so the workers page shows them online
            written = []
            out_dir.mkdir(parents=True, exist_ok=True)  # chromium does not create it
            for name, page in PAGES.items():
                out = out_dir / name
                screenshot(base + page, out)
                size = out.stat().st_size
                if size > MAX_BYTES:
                    raise SystemExit(f"{out} is {size} bytes, over {MAX_BYTES}")
                written.append(out)
            return written
        finally:
            procs.stop_all()
            redis.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args(argv)
    for path in run(args.out_dir, images=args.images):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
