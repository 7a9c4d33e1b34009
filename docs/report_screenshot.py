"""Rebuild docs/report.png: `kcap report` on the report test's drawn run, in headless Chromium.

    .venv/bin/python docs/report_screenshot.py            # needs Debian's chromium
    apt-get install -y chromium fonts-dejavu-core         # once, if it is missing

The run is tests/unit/test_report.py's: twelve drawn images with captions, scores and
entity boxes, and one unreadable input; one caption is long, to show the clamp. The page is
opened with #boxes, so every entity box shows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.report.gallery import write_report  # noqa: E402
from tests.chromium import chromium_binary, run_chromium  # noqa: E402
from tests.unit.test_export import write_result  # noqa: E402
from tests.unit.test_report import build_demo  # noqa: E402

LONG_CAPTION = (
    "a harbour at dawn with fishing boats moored along a stone quay, nets drying on the "
    "railings, gulls circling over the masts and a lighthouse at the end of the breakwater"
)


def main() -> int:
    if chromium_binary() is None:
        print("no chromium on PATH: apt-get install -y chromium", file=sys.stderr)
        return 1
    out = REPO / "docs" / "report.png"
    with tempfile.TemporaryDirectory(prefix="kcap-report-shot-") as folder:
        base = Path(folder)
        roots = build_demo(base / "run")
        assert roots.clip_failed is not None  # a low score puts the long caption in the first row
        write_result(roots.clip_failed, "harbour/dawn.png", score=12.9, caption=LONG_CAPTION, size=(320, 200))
        report = base / "report.html"
        write_report(roots, report)
        done = run_chromium(
            report.as_uri() + "#boxes", base / "profile", "--window-size=1280,1250", f"--screenshot={out}"
        )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
