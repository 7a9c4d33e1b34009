"""`kcap report`: the HTML it writes, and that page rendered by a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from PIL import Image, ImageDraw

from shared.cli.main import main
from shared.report.dataset import Roots
from shared.report.gallery import write_report
from tests.chromium import chromium_binary, run_chromium
from tests.unit.test_export import write_error, write_result


@pytest.fixture(autouse=True)
def no_kcap_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folder defaults come from KCAP_* variables: a developer's own must not leak in."""
    for name in [name for name in os.environ if name.startswith("KCAP_")]:
        monkeypatch.delenv(name)


# (folder, path, caption, score, size, background, shapes: (phrase or "", kind, box, colour))
DEMO = [
    (
        "captioned",
        "beach/sunset.png",
        "a sunset over the sea with a sailing boat on the horizon",
        31.2,
        (320, 200),
        "#f6a04d",
        [
            ("a sailing boat", "rect", (0.55, 0.55, 0.7, 0.72), "#ffffff"),
            ("the sea", "rect", (0.0, 0.62, 1.0, 1.0), "#2a5d8f"),
        ],
    ),
    (
        "captioned",
        "beach/dog.png",
        "a dog running on the sand",
        28.7,
        (240, 240),
        "#e8d7a9",
        [("a dog", "ellipse", (0.3, 0.35, 0.7, 0.75), "#8b5a2b")],
    ),
    (
        "captioned",
        "kitchen/apple.png",
        "a red apple on a wooden table",
        26.4,
        (240, 300),
        "#d9d4cf",
        [
            ("a red apple", "ellipse", (0.32, 0.3, 0.68, 0.6), "#c0392b"),
            ("a wooden table", "rect", (0.0, 0.6, 1.0, 1.0), "#8e5b32"),
        ],
    ),
    (
        "captioned",
        "kitchen/cups.png",
        "two blue cups next to each other",
        24.9,
        (320, 220),
        "#f0f0f0",
        [
            ("two blue cups", "rect", (0.2, 0.35, 0.42, 0.8), "#2e6bd1"),
            ("", "rect", (0.55, 0.35, 0.77, 0.8), "#2e6bd1"),
        ],
    ),
    (
        "captioned",
        "city/street.png",
        "a yellow taxi on a city street at night",
        22.3,
        (300, 200),
        "#1d2333",
        [("a yellow taxi", "rect", (0.35, 0.55, 0.7, 0.8), "#f5c518")],
    ),
    (
        "captioned",
        "city/tower.png",
        "a tall grey tower against a clear sky",
        19.8,
        (200, 300),
        "#9cc9f0",
        [("a tall grey tower", "rect", (0.4, 0.15, 0.6, 1.0), "#7f8c8d")],
    ),
    (
        "captioned",
        "art/circles.png",
        "an abstract painting with green and purple circles",
        17.6,
        (260, 260),
        "#fdf6e3",
        [
            ("green", "ellipse", (0.1, 0.1, 0.5, 0.5), "#27ae60"),
            ("purple circles", "ellipse", (0.45, 0.45, 0.9, 0.9), "#8e44ad"),
        ],
    ),
    (
        "captioned",
        "art/lines.png",
        "a minimalist drawing of black lines",
        15.4,
        (280, 200),
        "#ffffff",
        [("", "rect", (0.1, 0.48, 0.9, 0.52), "#000000")],
    ),
    ("clip_failed", "beach/blur.png", "a picture of a picture", 14.1, (240, 180), "#b0a090", []),
    (
        "clip_failed",
        "city/noise.png",
        'the text says <b>OPEN</b> & "closed"',
        11.8,
        (240, 180),
        "#555555",
        [("the text", "rect", (0.2, 0.3, 0.8, 0.6), "#eeeeee")],
    ),
    ("clip_failed", "art/dark.png", "a black square", 9.5, (200, 200), "#101010", []),
    (
        "clip_failed",
        "kitchen/odd.png",
        "a cat sitting on a chair",
        6.2,
        (240, 240),
        "#c8e6c9",
        [("a cat", "ellipse", (0.3, 0.2, 0.7, 0.6), "#ff7043")],
    ),
]


def build_demo(base: Path) -> Roots:
    """Twelve drawn images with captions, scores and entity boxes, and one unreadable input."""
    for folder, rel, caption, score, size, background, shapes in DEMO:
        entities: list[dict[str, Any]] = []
        for phrase, _, box, _ in shapes:
            if phrase:
                start = caption.find(phrase)
                entities.append({"phrase": phrase, "start": start, "end": start + len(phrase), "boxes": []})
            if entities:  # a shape without a phrase is another box of the phrase before it
                entities[-1]["boxes"].append(list(box))
        image = write_result(base / folder, rel, score=score, caption=caption, entities=entities, size=size)
        picture = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(picture)
        w, h = size
        for _, kind, (x0, y0, x1, y1), colour in shapes:
            xy = (x0 * w, y0 * h, x1 * w - 1, y1 * h - 1)
            if kind == "ellipse":
                draw.ellipse(xy, fill=colour)
            else:
                draw.rectangle(xy, fill=colour)
        picture.save(image)
    write_error(base / "errors", "city/truncated.jpg")
    return Roots(output=base / "captioned", clip_failed=base / "clip_failed", errors=base / "errors")


class _Page(HTMLParser):
    """Cards, their images and boxes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []
        self.boxes: list[str] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        classes = values.get("class", "").split()
        if tag == "body":
            self.body = values
        if "card" in classes:
            self.cards.append(values)
        if tag == "img":
            self.images.append(values)
        if "box" in classes:
            self.boxes.append(values["style"])


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_the_page_links_every_image_relatively_and_lazily(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    report = tmp_path / "reports" / "nested" / "report.html"
    summary = write_report(roots, report)
    html = report.read_text(encoding="utf-8")
    page = _parse(html)
    assert summary["counts"] == {
        "output": 8,
        "clip_failed": 4,
        "errors": 1,
        "total": 13,
        "unreadable_records": 0,
    }
    assert len(page.cards) == 12 and len(page.images) == 12
    for image in page.images:
        assert image["loading"] == "lazy"
        assert image["src"].startswith("../../run/")
        assert (report.parent / unquote(image["src"])).is_file()
    assert "base64," not in html and "data:image" not in html
    scores = [float(card["data-score"]) for card in page.cards]
    assert scores == sorted(scores) and scores[0] == 6.2  # worst first without any script
    assert {card["data-root"] for card in page.cards} == {"output", "clip_failed"}
    assert "truncated.jpg" in html and "corrupt or truncated image" in html


def test_boxes_are_percentages_of_the_image(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    page = _parse(_render(roots, tmp_path / "r.html"))
    assert len(page.boxes) == sum(1 for row in DEMO for shape in row[6]) - 1  # lines.png has no phrase
    assert any("left:55.00%;top:55.00%;width:15.00%;height:17.00%" in style for style in page.boxes)


def test_the_histogram_marks_the_threshold(tmp_path: Path) -> None:
    html = _render(build_demo(tmp_path / "run"), tmp_path / "r.html")
    svg = re.search(r'<svg class="hist".*?</svg>', html, re.S)
    assert svg is not None
    assert 'class="threshold"' in svg.group() and "threshold 15" in svg.group()
    counts = [int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title>", svg.group())]
    assert sum(counts) == 12


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    out = tmp_path / "captioned"
    write_result(
        out,
        'q"><img src=x onerror=alert(1)>.png',
        score=20.0,
        caption="</p><script>alert('caption')</script>",
        entities=[{"phrase": "<b>phrase</b>", "start": 0, "end": 1, "boxes": [[0.1, 0.1, 0.2, 0.2]]}],
    )
    html = _render(Roots(output=out, clip_failed=None, errors=None), tmp_path / "r.html")
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;caption&#x27;)" in html
    assert "<b>phrase</b>" not in html and "&lt;b&gt;phrase&lt;/b&gt;" in html
    assert "onerror=alert(1)>" not in html
    page = _parse(html)
    assert len(page.cards) == 1 and len(page.images) == 1
    assert (tmp_path / unquote(page.images[0]["src"])).is_file()  # the odd name is still linked right


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = build_demo(tmp_path / "run")
    out = tmp_path / "page.html"
    assert main(["report", str(roots.output), "--out", str(out)]) == 0  # siblings found by default
    assert "8 output, 4 clip failed, 1 errors" in capsys.readouterr().out
    assert len(_parse(out.read_text()).cards) == 12


def test_errors_come_first_with_their_count(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    write_error(tmp_path / "run" / "errors", "empty.png", reason="empty file")
    html = _render(roots, tmp_path / "r.html")
    heading = re.search(r'<section class="errors" id="errors"><h2>([^<]*)</h2>', html)
    assert heading is not None and heading.group(1) == "Errors: 2 inputs not captioned"
    # Before the counts, the histogram and every card: what a user must act on comes first.
    assert heading.start() < html.index('class="tiles"') < html.index('<main id="cards">')
    section = html[heading.start() : html.index("</section>", heading.start())]
    assert "empty file" in section and "corrupt or truncated image" in section
    assert f'title="{tmp_path / "run" / "errors" / "city" / "truncated.jpg"}"' in section


def test_one_error_is_singular_and_none_shows_no_section(tmp_path: Path) -> None:
    html = _render(build_demo(tmp_path / "run"), tmp_path / "r.html")
    assert "<h2>Errors: 1 input not captioned</h2>" in html
    out = tmp_path / "clean" / "captioned"
    write_result(out, "a.png", score=20.0)
    assert 'class="errors"' not in _render(
        Roots(output=out, clip_failed=None, errors=None), tmp_path / "c.html"
    )


def test_a_card_gives_its_whole_file_path_on_hover(tmp_path: Path) -> None:
    """The shown path is cut with an ellipsis when long; the title holds the file's whole path."""
    out = tmp_path / "captioned"
    image = write_result(out, "a/b/" + "long-folder-name/" * 6 + "photo.png", score=20.0)
    html = _render(Roots(output=out, clip_failed=None, errors=None), tmp_path / "r.html")
    link = re.search(r'<a class="path" href="[^"]*" title="([^"]*)">([^<]*)</a>', html)
    assert link is not None
    assert link.group(1) == str(image) and link.group(2) == image.relative_to(out).as_posix()


def _render(roots: Roots, out: Path) -> str:
    write_report(roots, out)
    return out.read_text(encoding="utf-8")


# -- headless Chromium ------------------------------------------------------------


needs_chromium = pytest.mark.skipif(
    chromium_binary() is None,
    reason="no chromium binary on PATH: `apt-get install -y chromium` to run the browser check",
)


@needs_chromium
def test_headless_chromium_runs_the_page(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    report = tmp_path / "out" / "report.html"
    write_report(roots, report)
    url = report.as_uri() + "#boxes"  # the hash turns on every entity box
    done = run_chromium(url, tmp_path / "profile-dom", "--window-size=1400,4000", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    page = _parse(done.stdout)
    assert page.body.get("data-ready") == "1", "the page's script did not run"
    assert "all-boxes" in page.body.get("class", "").split()
    assert len(page.cards) == 12
    classes = [card["class"].split() for card in page.cards]
    assert not [c for c in classes if "broken" in c], "some images did not load from their relative paths"
    assert all("loaded" in c for c in classes)
    scores = [float(card["data-score"]) for card in page.cards]
    assert scores == sorted(scores)
    assert "12 of 12 shown" in done.stdout


@needs_chromium
def test_headless_chromium_takes_a_screenshot(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    report = tmp_path / "report.html"
    write_report(roots, report)
    shot = tmp_path / "shot.png"
    done = run_chromium(
        report.as_uri(), tmp_path / "profile-shot", "--window-size=1280,900", f"--screenshot={shot}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # a real page, not a blank one


# Appended to a copy of the page: measures every label of the histogram as Chromium lays it out.
_MEASURE_LABELS = """<script>
window.addEventListener("load", () => {
  const svg = document.querySelector("svg.hist");
  const width = svg.viewBox.baseVal.width;
  const out = [...svg.querySelectorAll("text")].map((t) => {
    const box = t.getBBox();
    return `${t.textContent}|${box.x.toFixed(1)}|${(box.x + box.width).toFixed(1)}|${width}`;
  });
  document.body.setAttribute("data-labels", out.join(";"));
});
</script>"""


@needs_chromium
@pytest.mark.parametrize("threshold", [0.5, 15.0, 31.0])
def test_every_histogram_label_lies_inside_the_chart(tmp_path: Path, threshold: float) -> None:
    """The threshold label used to run off the right edge when the threshold sat near the top."""
    base = tmp_path / "run"
    for i, score in enumerate((1.0, 8.0, 14.0, 22.0, 31.0)):
        write_result(base / "captioned", f"{i}.png", score=score, threshold=threshold)
    report = tmp_path / "report.html"
    write_report(Roots(output=base / "captioned", clip_failed=None, errors=None), report)
    measured = tmp_path / "measured.html"
    # The copy drops the page's script-hash policy, which would (rightly) refuse the probe.
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())
    measured.write_text(page.replace("</body>", _MEASURE_LABELS + "</body>"))
    done = run_chromium(measured.as_uri(), tmp_path / "profile", "--window-size=1200,900", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-labels="([^"]*)"', done.stdout)
    assert found is not None, done.stdout[-2000:]
    labels = [item.split("|") for item in found.group(1).split(";")]
    assert any(text == f"threshold {threshold:g}" for text, *_ in labels)
    for text, left, right, width in labels:
        assert float(left) >= 0 and float(right) <= float(width), f"{text!r} runs off the chart: {labels}"


# Appended to a copy of the page: the long caption's box before and after clicks, the short
# one's button, the long path's cut and title, and where the errors section sits.
_PROBE_CLAMP = """<script>
window.addEventListener("load", () => {
  const card = (path) => document.querySelector(`.card[data-path="${path}"]`);
  const long = card(LONG_PATH), short = card("beach/dog.png");
  const caption = long.querySelector(".caption"), more = long.querySelector(".more");
  const state = () => [caption.clientHeight, caption.scrollHeight, more.hidden, more.textContent].join(",");
  const out = {closed: state()};
  more.click();
  out.opened = state();
  caption.click();
  out.closed_again = state();
  caption.click();
  out.opened_by_caption = state();
  out.short = [short.querySelector(".caption").classList.contains("long"),
               short.querySelector(".more").hidden].join(",");
  const path = long.querySelector(".path");
  out.path = [path.scrollWidth > path.clientWidth, path.title].join(",");
  out.order = [document.getElementById("errors").getBoundingClientRect().top <
               document.getElementById("cards").getBoundingClientRect().top].join(",");
  document.body.setAttribute("data-probe", JSON.stringify(out));
});
</script>"""


@needs_chromium
def test_headless_chromium_clamps_a_long_caption_and_opens_it_on_click(tmp_path: Path) -> None:
    roots = build_demo(tmp_path / "run")
    long_path = "trips/" + "a-rather-long-folder-name/" * 4 + "harbour.png"
    caption = "a harbour at dawn with fishing boats, " * 12 + "and gulls"
    image = write_result(roots.output, long_path, score=21.0, caption=caption, size=(320, 200))
    report = tmp_path / "report.html"
    write_report(roots, report)
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())
    probe = _PROBE_CLAMP.replace("LONG_PATH", json.dumps(long_path))
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", probe + "</body>"))
    done = run_chromium(measured.as_uri(), tmp_path / "profile", "--window-size=1280,1200", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found is not None, done.stdout[-2000:]
    probe_out = json.loads(unescape(found.group(1)))

    def state(key: str) -> tuple[int, int, str, str]:
        shown, whole, hidden, label = probe_out[key].split(",")
        return int(shown), int(whole), hidden, label

    shown, whole, hidden, label = state("closed")
    assert shown < whole / 2 and (hidden, label) == ("false", "more")  # clamped, with its button
    shown, whole, hidden, label = state("opened")
    assert shown == whole and label == "less"  # the whole text after a click on "more"
    assert state("closed_again")[0] < state("closed_again")[1]  # a click on the caption clamps again
    assert state("opened_by_caption")[0] == state("opened_by_caption")[1]  # and opens it
    assert probe_out["short"] == "false,true"  # a caption that fits has no button
    assert probe_out["path"] == f"true,{image}"  # cut on the card, whole on hover
    assert probe_out["order"] == "true"
