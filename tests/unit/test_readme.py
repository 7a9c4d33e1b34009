"""The README's figures agree with each other and with its own tables."""

from __future__ import annotations

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(mentioning: str) -> list[str]:
    """The README's bullets, paragraphs and table rows that mention a phrase."""
    blocks = re.split(r"\n(?=- |\| |\n)", README)
    return [block for block in blocks if mentioning in block]


def _speed(row_label: str) -> float:
    """images/s of the first 2-thread table row whose path is row_label exactly."""
    for line in README.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == row_label and cells[1] == "16":
            return float(cells[2])
    raise AssertionError(f"no table row {row_label!r} at batch 16")


def test_the_compile_figures_are_the_same_wherever_the_readme_gives_them() -> None:
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


def test_every_speed_in_the_prose_is_one_of_the_measured_table_rows() -> None:
    """A speed that no benchmark table holds is a figure no committed code printed."""
    table_cells = {
        cell.strip() for line in README.splitlines() if line.startswith("|") for cell in line.split("|")
    }
    prose = "\n".join(line for line in README.splitlines() if not line.startswith("|"))
    speeds = re.findall(r"\b(\d+(?:\.\d+)?) images/s", prose)
    assert not [speed for speed in speeds if speed not in table_cells], speeds


def test_every_setting_has_its_environment_variable_in_the_readme() -> None:
    from dataclasses import fields

    from shared.core.settings import Settings

    missing = [f.name for f in fields(Settings) if f"`KCAP_{f.name.upper()}`" not in README]
    assert not missing, f"settings without a README row: {missing}"
