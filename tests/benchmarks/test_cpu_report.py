"""The CPU benchmark's sanity check fails the benchmark when any path writes, scores or routes
differently from the original loop (a); checked here on made-up results, in a second."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.benchmarks.cpu_plan import Plan
from tests.benchmarks.cpu_report import sanity

PLAN = Plan(images=4, new_tokens=3, batch_sizes=(2,), e2e_batch_size=2, compile=False, threads=1)
CAPTIONS = {f"img_{i:04d}.jpg": f"word{i} two three" for i in range(PLAN.images)}
SCORES = {name: 10.0 + 2 * i for i, name in enumerate(CAPTIONS)}  # 10 12 14 16: one passes 15


def _results() -> dict[str, dict[str, Any]]:
    def path() -> dict[str, Any]:
        return {"images": PLAN.images, "captions": dict(CAPTIONS), "scores": dict(SCORES)}

    routed = {"output": 1, "clip_failed": 3, "errors": 0}
    runs = {
        "empty": {"routed": 0, "files": 0, "counts": {"output": 0, "clip_failed": 0, "errors": 0}},
        "all": {"routed": 4, "files": 4, "counts": routed},
    }
    return {
        "a": path(),
        "b2": path(),
        "c": {**path(), "runs": runs},
        # kcap up also routes its warm-up file, a copy of the first image (score 10).
        "u": {**path(), "counts": {"output": 1, "clip_failed": 4, "errors": 0}},
    }


def test_identical_paths_pass() -> None:
    assert PLAN.paths == ["a", "b2", "c", "u"]
    assert sanity(_results(), PLAN) == []


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        (
            "b2",
            lambda r: r["captions"].update({"img_0002.jpg": "other two three"}),
            "b2: 3 of 4 captions identical",
        ),
        ("c", lambda r: r["captions"].pop("img_0001.jpg"), "c: 3 of 4 captions identical to (a), 3 in both"),
        ("u", lambda r: r["scores"].update({"img_0003.jpg": 16.1}), "u: 1 of 4 scores differ"),
        (
            "b2",
            lambda r: r["scores"].pop("img_0000.jpg"),
            "b2: 1 of 4 scores differ from (a)'s or are missing",
        ),
        (
            "c",
            lambda r: r["runs"]["all"].update(counts={"output": 0, "clip_failed": 4, "errors": 0}),
            "kcap run: routed",
        ),
        ("u", lambda r: r.update(counts={"output": 2, "clip_failed": 3, "errors": 0}), "kcap up: routed"),
    ],
)
def test_a_path_that_differs_from_the_original_loop_fails_the_benchmark(
    path: str, change: Any, expected: str
) -> None:
    results = copy.deepcopy(_results())
    change(results[path])
    problems = sanity(results, PLAN)
    assert len(problems) >= 1 and any(expected in p for p in problems), problems
