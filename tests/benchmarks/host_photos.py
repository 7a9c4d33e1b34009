"""(r) of the host-path benchmark: real-size photos, in process and through `kcap run`.

In process (host_decode.py), every way of preparing each photo in turn: the original
script's, the floor under any bit-identical way, kcap's Engine.prepare and --fast-decode.
Then what 12 MP JPEGs add to a whole `kcap run` process tree (24 photos, each under 6
names), net of the same run over as many small images, in turns (photos, small, photos with
--fast-decode; three times), since one run's start-up alone moves by a second or two of
CPU. Then Engine.prepare from 1 and 2 pool threads (host_threads.py), and how many captions
--fast-decode changes.

The runs' captions must equal what the same engine writes in process, and every photo must
be routed: `problems` lists what is not, and bench_host then exits 1.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.core.settings import Settings
from tests.benchmarks import harness
from tests.benchmarks.cpu_plan import Plan

E2E_TURNS = 3
# The 24 photos of a `kcap run` each go in this many times, under other names: a run's
# start-up moves by a second or two of CPU, which over 24 photos alone hid --fast-decode.
E2E_COPIES = 6
THREAD_PHOTOS = 12  # 12 MP JPEGs per thread-count run, each prepared ROUNDS times
RUNS = (("photos", {}), ("small", {}), ("photos_fast", {"KCAP_FAST_DECODE": "1"}))


def measure(
    workdir: Path,
    models: dict[str, Path],
    settings: Settings,
    files: list[Path],
    twelve: list[Path],
    small: list[Path],
    e2e_plan: Callable[[int], Plan],
) -> dict[str, Any]:
    from tests.benchmarks.cpu_e2e import kcap_run_once
    from tests.benchmarks.host_decode import fast_decode_agreement, photo_costs
    from tests.benchmarks.host_threads import prepare_scaling

    fast = settings.replace(fast_decode=True)
    costs = photo_costs(files, models["kosmos224"], models["clip224"], settings)
    scaling = {
        "default": prepare_scaling(twelve[:THREAD_PHOTOS], settings),
        "fast": prepare_scaling(twelve[:THREAD_PHOTOS], fast, rounds=4),
    }
    e2e_photos = _copies(twelve, workdir / "photos-e2e", E2E_COPIES)
    e2e = e2e_plan(len(e2e_photos))
    reference = {"photos": _captions(settings, e2e_photos), "photos_fast": _captions(fast, e2e_photos)}
    agreement = fast_decode_agreement(
        [f for f in files if f.suffix == ".jpg"], models["kosmos_small"], models["clip224"]
    )
    turns: list[dict[str, Any]] = []
    for turn in range(E2E_TURNS):
        runs = {}
        for name, env in RUNS:
            inputs = small[: len(e2e_photos)] if name == "small" else e2e_photos
            base = workdir / "r" / f"{name}-{turn}"
            runs[name] = kcap_run_once(
                base, models["kosmos224"], models["clip224"], inputs, e2e, extra_env=env
            )
        turns.append(runs)
    original_12 = [sum(costs["original"]["per_file"][f.name].values()) for f in twelve]
    floor_12 = [sum(costs["floor"]["per_file"][f.name].values()) for f in twelve]
    return {
        "costs": costs,
        "scaling": scaling,
        "agreement": agreement,
        "problems": run_problems(turns, reference, len(e2e_photos)),
        "e2e": [
            {k: {kk: vv for kk, vv in v.items() if kk != "captions"} for k, v in runs.items()}
            for runs in turns
        ],
        "original_12mp_mean_ms": statistics.mean(original_12),
        "floor_12mp_mean_ms": statistics.mean(floor_12),
    }


def _copies(photos: list[Path], folder: Path, copies: int) -> list[Path]:
    """Each photo under `copies` names (hard links where the file system allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for copy in range(copies):
        for photo in photos:
            path = folder / f"{photo.stem}-{copy}{photo.suffix}"
            if not path.exists():
                try:
                    os.link(photo, path)
                except OSError:
                    shutil.copyfile(photo, path)
            out.append(path)
    return out


def _captions(settings: Settings, paths: list[Path]) -> dict[str, str]:
    """What the worker's own engine writes for these photos, in process, at the same batch."""
    from workers.captioning.engine import Engine

    engine = Engine.load(settings, eager_scorer=True)
    jobs = harness.jobs_from_files(paths[0].parent, paths, settings)
    return harness.kcap_batched(engine, jobs, batch_size=settings.batch_size).captions


def run_problems(turns: list[dict[str, Any]], reference: dict[str, dict[str, str]], photos: int) -> list[str]:
    problems = []
    for turn, runs in enumerate(turns, 1):
        for name, run in runs.items():
            counts = run["counts"]
            if counts["errors"] or counts["output"] + counts["clip_failed"] != photos:
                problems.append(f"(r) kcap run over {name}, turn {turn}: routed {counts}")
            if name in reference:
                same, total = harness.agreement(reference[name], run["captions"])
                if not same == total == photos:
                    problems.append(
                        f"(r) kcap run over {name}, turn {turn}: {same}/{photos} captions equal in process"
                    )
    return problems


# -- the report -----------------------------------------------------------------------------


def _x(value: float, base: float) -> str:
    return f"{value:.0f} ({value / base:.2f}x)"


def report(r: dict[str, Any]) -> list[str]:
    costs = r["costs"]
    headers = [
        "photo",
        "original: decode + Kosmos-2 + CLIP processors",
        "floor: full decode + Kosmos-2 resize + CLIP resize",
        "kcap Engine.prepare",
        *(f"--fast-decode, short side {way.split()[1]}" for way in costs if way.startswith("fast ")),
    ]
    rows = []
    for kind, original in costs["original"]["by_kind"].items():
        floor = costs["floor"]["by_kind"][kind]
        base = original["all"]
        rows.append(
            [
                kind,
                f"{base:.0f} ({original['decode']:.0f} + {original['kosmos']:.0f} + {original['clip']:.0f})",
                f"{_x(floor['all'], base)}: {floor['decode']:.0f} + {floor['kosmos resize']:.0f} + "
                f"{floor['clip resize']:.0f}",
                _x(costs["kcap"]["by_kind"][kind]["total"], base),
                *(
                    _x(c["by_kind"][kind]["total"], base)
                    for way, c in costs.items()
                    if way.startswith("fast ")
                ),
            ]
        )
    lines = [
        "(r) CPU ms per photo in process, one thread, median; every way on each photo in turn; "
        "(x) = against the original",
        harness.markdown_table(headers, rows),
        "",
    ]
    lines += _e2e_lines(r)
    lines += scaling_lines(r["scaling"])
    for side, agreement in r["agreement"].items():
        lines.append(
            f"(r) --fast-decode at short side {side}: captions equal to the default decode's on "
            f"{agreement['agree']} of {agreement['photos']} JPEG photos (small model, greedy, 16 tokens; "
            f"{agreement['distinct']} distinct captions; differ: {', '.join(agreement['differ']) or '-'})"
        )
    return lines


def _e2e_lines(r: dict[str, Any]) -> list[str]:
    original, floor = r["original_12mp_mean_ms"], r["floor_12mp_mean_ms"]
    lines = []
    for name, label, target in (("photos", "default", 0.6), ("photos_fast", "--fast-decode", 0.15)):
        per_turn = [_added_ms(runs, name) for runs in r["e2e"]]
        added = statistics.median(per_turn)
        rates = []
        for runs in r["e2e"]:
            steady = runs[name]["phases"].get("first_to_last_routed_s") or runs[name]["wall_s"]
            rates.append(f"{(runs[name]['routed'] - 1) / steady:.1f}")
        lines.append(
            f"(r) {label}: a 12 MP JPEG adds {added:.0f} ms of CPU to the whole `kcap run` tree, net of "
            f"small images (median of turns: {', '.join(f'{ms:.0f}' for ms in per_turn)}): "
            f"{added / original:.2f}x the original's {original:.0f} ms (target <= {target}; "
            f"the floor is {floor / original:.2f}x); "
            f"photos/s steady: {', '.join(rates)}"
        )
    return lines


def _added_ms(runs: dict[str, Any], name: str) -> float:
    """CPU ms per photo that the run over photos took beyond the run over small images."""
    return 1000 * (runs[name]["cpu_s"] - runs["small"]["cpu_s"]) / runs[name]["files"]


def scaling_lines(scaling: dict[str, Any]) -> list[str]:
    lines = []
    for mode, label in (("default", "default"), ("fast", "--fast-decode")):
        run = scaling[mode]
        one, two = run["best"]["1"], run["best"]["2"]
        verdict = "" if one["idle"] >= 0.5 else " INCONCLUSIVE: no core was left idle beside one thread"
        lines.append(
            f"(r) Engine.prepare, {label}, {run['photos']} 12 MP JPEGs from a pool: 2 threads "
            f"{two['rate']:.1f} photos/s, 1 thread {one['rate']:.1f} = {two['rate'] / one['rate']:.2f}x "
            f"(target about 2x; best of {len(run['turns']['1'])} turns each). CPU ms per photo "
            f"{two['cpu_ms']:.0f} / {one['cpu_ms']:.0f}; cores busy {two['busy']:.2f} / {one['busy']:.2f}; "
            f"cores the machine left idle {two['idle']:.2f} / {one['idle']:.2f}{verdict}"
        )
    return lines
