"""bench_host (r) fails on what a `kcap run` over photos got wrong: a photo not routed, or
a caption other than the one the same engine writes in process."""

from __future__ import annotations

from typing import Any

from tests.benchmarks.host_photos import run_problems


def _run(captions: dict[str, str], *, errors: int = 0) -> dict[str, Any]:
    return {"counts": {"output": len(captions), "clip_failed": 0, "errors": errors}, "captions": captions}


def test_runs_that_match_the_engine_in_process_are_no_problem() -> None:
    reference = {"photos": {"a.jpg": "a cat", "b.jpg": "a dog"}}
    turns = [{"photos": _run(reference["photos"]), "small": _run({"s1.png": "one", "s2.png": "two"})}]
    assert run_problems(turns, reference, photos=2) == []


def test_another_caption_or_a_photo_not_routed_is_a_problem() -> None:
    reference = {"photos": {"a.jpg": "a cat", "b.jpg": "a dog"}}
    other_caption = _run({"a.jpg": "a cat", "b.jpg": "a cow"})
    one_missing = _run({"a.jpg": "a cat"}, errors=1)
    turns = [{"photos": other_caption}, {"photos": one_missing}]
    problems = run_problems(turns, reference, photos=2)
    assert problems == [
        "(r) kcap run over photos, turn 1: 1/2 captions equal in process",
        "(r) kcap run over photos, turn 2: routed {'output': 1, 'clip_failed': 0, 'errors': 1}",
        "(r) kcap run over photos, turn 2: 1/2 captions equal in process",
    ]
