"""A static HTML report of a finished run: counts, a score histogram, and image cards.

The page opens from disk (file://) with no server. Images are linked by relative paths from
the report's folder, never inlined. Every caption, phrase and path is untrusted text and is
escaped; on top of that a Content-Security-Policy lets only the page's own script run.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.core.naming import name_bytes, shown
from shared.core.outcomes import Outcome
from shared.report.dataset import (
    CLIP_FAILED,
    ERRORS,
    OUTPUT,
    Dataset,
    Roots,
    Row,
    histogram,
    read_dataset,
    scored,
    summarize,
)
from shared.report.gallery_assets import CSS, SCRIPT

# Outline colours of entity boxes, cycled per entity.
PALETTE = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa")
ROOT_LABELS = {OUTPUT: "output", CLIP_FAILED: "clip failed", ERRORS: "errors"}


def render(
    dataset: Dataset, summary: dict[str, Any], *, report_path: Path, title: str = "kcap report"
) -> str:
    """The whole page as one string; image links are relative to report_path's folder."""
    report_dir = report_path.expanduser().resolve().parent
    cards = sorted((row for row in dataset.rows if row.root != ERRORS), key=_ascending)
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (
        "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'"
    )
    roots = [name for name, _ in dataset.roots.items() if name != ERRORS]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            _folders(dataset),
            # What went wrong comes before what went right: an error is what a user must act on.
            _errors(dataset.by_root(ERRORS)),
            '<div class="top">',
            _tiles(summary),
            _stats_table(summary),
            _histogram_svg(dataset, summary["clip_score"]["threshold"]),
            "</div>",
            _controls(roots),
            '<main id="cards">',
            *(_card(row, report_dir) for row in cards),
            "</main>",
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )


def _ascending(row: Row) -> tuple[bool, float, str]:
    return (row.clip_score is None, row.clip_score or 0.0, row.path)


def image_href(image: Path, report_dir: Path) -> str:
    """A relative URL from the report's folder to the image, each segment percent-encoded."""
    try:
        relative = os.path.relpath(image, report_dir)
    except ValueError:  # another drive on Windows: no relative path exists
        return image.resolve().as_uri()
    # By bytes: a name that is not UTF-8 links as its own bytes (%E9), as the browser reads it.
    return "/".join(quote(name_bytes(part), safe="") for part in Path(relative).parts)


def _folders(dataset: Dataset) -> str:
    parts = [f"{ROOT_LABELS[name]}: {escape(shown(str(path)))}" for name, path in dataset.roots.items()]
    return f'<p class="folders">{" · ".join(parts)}</p>'


def _tiles(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    tiles = [(counts[name], ROOT_LABELS[name]) for name in (OUTPUT, CLIP_FAILED, ERRORS)]
    tiles.append((counts["total"], "total"))
    if summary.get("pass_rate") is not None:
        tiles.append((f"{summary['pass_rate']:.0%}", "pass rate"))
    body = "".join(f'<div class="tile"><b>{value}</b><span>{label}</span></div>' for value, label in tiles)
    return f'<div class="tiles">{body}</div>'


def _stats_table(summary: dict[str, Any]) -> str:
    stats = summary["clip_score"]
    if not stats["count"]:
        return ""
    names = ("min", "p10", "median", "mean", "p90", "max")
    head = "".join(f"<th>{name}</th>" for name in names)
    cells = "".join(f"<td>{stats[name]:.2f}</td>" for name in names)
    threshold = "" if stats["threshold"] is None else f" · threshold {stats['threshold']:g}"
    return (
        f'<table class="stats"><caption>CLIP score, {stats["count"]} images{threshold}</caption>'
        f"<tr>{head}</tr><tr>{cells}</tr></table>"
    )


def _nice_width(span: float, target_bins: int) -> float:
    raw = span / target_bins
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= raw)


# A generous average glyph width for the 11 px labels (digits and lowercase in system-ui).
_LABEL_PX_PER_CHAR = 7.0


def _histogram_svg(dataset: Dataset, threshold: float | None, *, width: int = 520, height: int = 170) -> str:
    scores = [row.clip_score for row in scored(dataset.rows) if row.clip_score is not None]
    if not scores:
        return ""
    edges = [*scores, *([threshold] if threshold is not None else [])]
    target = min(30, max(8, round(2 * math.sqrt(len(scores)))))
    step = _nice_width(max(max(edges) - min(edges), 1.0), target)
    low = math.floor(min(edges) / step) * step
    high = max(low + step, math.ceil(max(edges) / step) * step)
    if high == max(edges):
        high += step  # keep the top value inside the last bin's open end
    bins = round((high - low) / step)
    counts = histogram(scores, bins=bins, low=low, high=high)
    left, right, top, bottom = 34, 10, 18, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts)

    def x_at(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    parts = [
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="histogram of CLIP scores">',
        f'<text x="{left}" y="12">CLIP score histogram</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for index, count in enumerate(counts):
        start = low + index * step
        passed = threshold is None or start + step / 2 >= threshold
        bar_h = plot_h * count / peak
        parts.append(
            f'<rect x="{x_at(start) + 1:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{max(plot_w / bins - 2, 1):.1f}" height="{bar_h:.1f}" '
            f'fill="{"#34c759" if passed else "#ff3b30"}">'
            f"<title>{start:g} to {start + step:g}: {count}</title></rect>"
        )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8e8e93"/>'
    )
    tick_every = max(1, math.ceil(bins / 8))
    for index in range(0, bins + 1, tick_every):
        value = low + index * step
        parts.append(f'<text x="{x_at(value):.1f}" y="{height - 8}" text-anchor="middle">{value:g}</text>')
    if threshold is not None:
        x = x_at(threshold)
        label = f"threshold {threshold:g}"
        # The label sits right of the line unless it would run off the chart, then left of it.
        fits_right = x + 4 + _LABEL_PX_PER_CHAR * len(label) <= width - 2
        anchor, label_x = ("start", x + 4) if fits_right else ("end", x - 4)
        parts.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}" '
            'stroke="#1c1c1e" stroke-width="2" stroke-dasharray="4 3"/>'
            f'<text class="threshold-label" x="{label_x:.1f}" y="{top + 10}" text-anchor="{anchor}">'
            f"{label}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _controls(roots: list[Outcome]) -> str:
    options = "".join(f'<option value="{name}">{ROOT_LABELS[name]}</option>' for name in roots)
    return (
        '<div class="controls">'
        '<label>sort <select id="sort"><option value="asc">score, worst first</option>'
        '<option value="desc">score, best first</option><option value="path">path</option></select></label>'
        f'<label>show <select id="root"><option value="all">all</option>{options}</select></label>'
        '<label>find <input id="find" type="search" placeholder="caption or path"></label>'
        '<label><input id="all-boxes" type="checkbox"> all boxes</label>'
        '<span id="shown"></span><span>hover or click an image for its boxes</span></div>'
    )


def _card(row: Row, report_dir: Path) -> str:
    fail = row.root == CLIP_FAILED
    score = "" if row.clip_score is None else f"{row.clip_score:.4f}"
    caption = row.caption or ""
    href = image_href(row.image_path, report_dir) if row.image_path is not None else ""
    if row.image_path is not None:
        size = f' width="{row.width}" height="{row.height}"' if row.width and row.height else ""
        picture = f'<img src="{escape(href)}" alt="{escape(caption)}" loading="lazy"{size}>'
    else:
        picture = '<div class="missing">image not found</div>'
    boxes = "".join(
        _box(entity.phrase, box, PALETTE[index % len(PALETTE)])
        for index, entity in enumerate(row.entities)
        for box in entity.boxes
    )
    phrases = ", ".join(escape(entity.phrase) for entity in row.entities if entity.boxes)
    shown_score = "no score" if row.clip_score is None else f"{row.clip_score:.2f}"
    # The shown path is cut with an ellipsis when long; the whole file path is on hover.
    whole = escape(shown(str(row.image_path or row.record_path)))
    link = (
        f'<a class="path" href="{escape(href)}" title="{whole}">'
        if href
        else f'<span class="path" title="{whole}">'
    )
    return (
        f'<figure class="card{" fail" if fail else ""}" data-root="{row.root}" '
        f'data-score="{score}" data-path="{escape(row.path)}">'
        f'<div class="frame" tabindex="0">{picture}{boxes}</div>'
        f'<figcaption><div class="meta"><span class="score">{shown_score}</span>'
        f"<span>{ROOT_LABELS[row.root]}</span>{link}{escape(row.path)}{'</a>' if href else '</span>'}</div>"
        f'<p class="caption">{escape(caption)}</p><button type="button" class="more" hidden>more</button>'
        + (f'<p class="phrases">boxes: {phrases}</p>' if phrases else "")
        + "</figcaption></figure>"
    )


def _box(phrase: str, box: list[float], colour: str) -> str:
    x0, y0, x1, y1 = box
    return (
        f'<div class="box" style="--c:{colour};left:{x0 * 100:.2f}%;top:{y0 * 100:.2f}%;'
        f'width:{(x1 - x0) * 100:.2f}%;height:{(y1 - y0) * 100:.2f}%">'
        f"<span>{escape(phrase)}</span></div>"
    )


def _errors(rows: list[Row]) -> str:
    if not rows:
        return ""
    body = "".join(
        f'<tr><td title="{escape(shown(str(row.image_path or row.record_path)))}">{escape(row.path)}'
        f"{_moved_from(row)}</td><td>{escape(row.error or '')}</td>"
        f"<td>{escape(row.error_class or '')}</td></tr>"
        for row in rows
    )
    return (
        f'<section class="errors" id="errors"><h2>Errors: {len(rows)} '
        f"input{'' if len(rows) == 1 else 's'} not captioned</h2>"
        "<p>Each is copied into the errors folder, beside NAME.error.json with its reason.</p>"
        "<table><tr><th>path</th><th>reason</th><th>kind</th></tr>"
        f"{body}</table></section>"
    )


def _moved_from(row: Row) -> str:
    """Where an error filed under another name (cut to fit, or too deep) came from."""
    if row.source is None or row.source.endswith(row.path):
        return ""
    return f"<br><small>from {escape(row.source)}</small>"


def write_report(roots: Roots, out: Path, *, title: str = "kcap report") -> dict[str, Any]:
    """Render and write the page; the run's summary."""
    out = out.expanduser().resolve()
    dataset = read_dataset(roots)
    summary = summarize(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(dataset, summary, report_path=out, title=title), encoding="utf-8")
    return summary
