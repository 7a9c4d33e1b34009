"""The README and docs/: figures that agree with each other and with their tables, a README
short enough to read first, and links that lead somewhere."""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import REPO

README_PATH = REPO / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = sorted((REPO / "docs").glob("*.md"))
# Every page a figure may sit on: the README and each page under docs/.
TEXT = "\n\n".join(path.read_text(encoding="utf-8") for path in [README_PATH, *DOCS])
SETTINGS_DOC = REPO / "docs" / "settings.md"
# What a newcomer reads first: the rest belongs in docs/.
README_MAX_LINES = 300


def _blocks(mentioning: str) -> list[str]:
    """The bullets, paragraphs and table rows of the README and docs/ that mention a phrase."""
    blocks = re.split(r"\n(?=- |\| |\n)", TEXT)
    return [block for block in blocks if mentioning in block]


def _speed(row_label: str) -> float:
    """images/s of the first 2-thread table row whose path is row_label exactly."""
    for line in TEXT.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == row_label and cells[1] == "16":
            return float(cells[2])
    raise AssertionError(f"no table row {row_label!r} at batch 16")


def test_the_compile_figures_are_the_same_wherever_the_docs_give_them() -> None:
    blocks = _blocks("--compile")
    starts = {m.group(0) for block in blocks for m in re.finditer(r"\b\d+–\d+ s\b", block)}
    assert len(starts) == 1, f"--compile start-up given as {sorted(starts)}"
    prose = [block for block in blocks if not block.startswith("|")]
    speedups = [sorted(set(re.findall(r"\b(\d\.\d\d)×", block))) for block in prose]
    speedups = [found for found in speedups if found]
    assert len(speedups) >= 2 and all(found == speedups[0] for found in speedups), speedups
    assert not any(re.search(r"\d\s*%", block) for block in prose), "a --compile gain given as a percentage"
    # The first ratio is the table's: compiled over eager at batch 16.
    measured = _speed("(b) kcap batched, in process, `--compile`") / _speed("(b) kcap batched, in process")
    assert f"{measured:.2f}" == speedups[0][0]


def test_the_readme_gives_the_compile_figures_too() -> None:
    """The Limits section keeps them: the figures above must cover the README, not only docs/."""
    limits = README.split("## Limits", 1)[1].split("\n## ", 1)[0]
    assert "28–93 s" in limits and "0.98×" in limits


def test_every_speed_in_the_prose_is_one_of_the_measured_table_rows() -> None:
    """A speed that no benchmark table holds is a figure no committed code printed."""
    table_cells = {
        cell.strip() for line in TEXT.splitlines() if line.startswith("|") for cell in line.split("|")
    }
    prose = "\n".join(line for line in TEXT.splitlines() if not line.startswith("|"))
    speeds = re.findall(r"\b(\d+(?:\.\d+)?) images/s", prose)
    assert not [speed for speed in speeds if speed not in table_cells], speeds


def test_every_setting_has_its_environment_variable_in_the_settings_page() -> None:
    from dataclasses import fields

    from shared.core.settings import Settings

    page = SETTINGS_DOC.read_text(encoding="utf-8")
    missing = [f.name for f in fields(Settings) if f"`KCAP_{f.name.upper()}`" not in page]
    assert not missing, f"settings without a row in docs/settings.md: {missing}"


def test_the_readme_stays_short() -> None:
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_the_quickstart_comes_first() -> None:
    """A newcomer reaches `make install` and `kcap demo` on the first screen."""
    before = README.split("## Quickstart", 1)
    assert len(before) == 2 and before[0].count("\n") <= 40
    quickstart = before[1].split("\n## ", 1)[0]
    assert quickstart.index("make install") < quickstart.index("kcap demo") < quickstart.index("make test")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _relative_links(page: Path) -> list[tuple[str, str]]:
    """(target path, anchor) of each relative Markdown link or image outside code."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    links = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        links.append((path, anchor))
    return links


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for path, anchor in _relative_links(page):
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{path}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{path}#{anchor}: no such heading")
    assert not broken, broken


def test_the_readme_links_to_docs_pages() -> None:
    """The link check above must have something to check: the README leads into docs/."""
    docs_links = {path for path, _ in _relative_links(README_PATH) if path.startswith("docs/")}
    assert {
        "docs/settings.md",
        "docs/performance.md",
        "docs/security.md",
        "docs/differences.md",
    } <= docs_links


def test_the_readme_demo_up_line_is_the_one_kcap_demo_prints() -> None:
    from shared.cli.demo import demo_flags
    from workers.tiny.demo import demo_paths

    block = re.search(r"^kcap up --input-dir kcap-demo/.*?(?<!\\)$", README, flags=re.M | re.S)
    assert block is not None, "the README gives no `kcap up` line for the demo folder"
    words = shlex.split(block.group(0).replace("\\\n", " "))
    assert words[2:] == demo_flags(demo_paths(Path("kcap-demo")))
