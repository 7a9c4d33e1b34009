"""The CPU benchmark's report: the side-by-side table, the ratios, and the sanity checks."""

from __future__ import annotations

import functools
import math
from typing import Any

from shared.core.scoring import ORIGINAL_SLICE_CHARS, ScorerFamily
from shared.core.thresholds import DEFAULT_THRESHOLDS
from tests.benchmarks import harness
from tests.benchmarks.cpu_plan import Plan
from tests.tolerances import dual_encoder_chain, float32_spread


def render(results: dict[str, dict[str, Any]], plan: Plan) -> str:
    a = results["a"]
    c = results["c"]
    runs = c["runs"]
    base_ips = a["images"] / a["wall_s"]
    rows: list[list[object]] = []

    def ips(images: float, wall_s: float) -> float:
        return images / wall_s if wall_s > 0 else float("nan")

    def row(
        label: str, batch: object, images: float, wall_s: float, cpu_s: float | None, load: str, rss: str
    ) -> float:
        speed = ips(images, wall_s)
        rows.append(
            [
                label,
                batch,
                f"{images:.0f}",
                f"{wall_s:.1f}",
                f"{speed:.2f}",
                f"{speed / base_ips:.2f}x",
                f"{1000 * cpu_s / images:.0f}" if images and cpu_s is not None else "-",
                load,
                rss,
            ]
        )
        return speed

    def load_of(result: dict[str, Any]) -> str:
        before, after = result["load_avg"]
        return f"{before:.1f} / {after:.1f}"

    row(
        "(a) original loop, in process",
        1,
        a["images"],
        a["wall_s"],
        a["cpu_s"],
        load_of(a),
        harness.mib(a["peak_rss_self"]),
    )
    b_speed = {}
    for bs in plan.batch_sizes:
        b = results[f"b{bs}"]
        label = "(b) kcap Engine+Batcher, in process"
        b_speed[bs] = row(
            label, bs, b["images"], b["wall_s"], b["cpu_s"], load_of(b), harness.mib(b["peak_rss_self"])
        )
    compiled_name = f"b{plan.e2e_batch_size}c"
    compiled_speed = None
    if compiled_name in results:
        b = results[compiled_name]
        compiled_speed = row(
            "(b) kcap Engine+Batcher, in process, --compile",
            plan.e2e_batch_size,
            b["images"],
            b["wall_s"],
            b["cpu_s"],
            load_of(b),
            harness.mib(b["peak_rss_self"]),
        )
    tree = harness.mib(runs["all"]["peak_tree_rss"])
    rss_c = f"{harness.mib(c['peak_rss_children'])} (tree {tree})"
    e2e_bs = plan.e2e_batch_size
    one = runs["one batch"]
    raw = row(
        "(c) kcap run, raw: start to exit", e2e_bs, c["images"], c["wall_s"], c["cpu_s"], load_of(c), rss_c
    )
    net = row(
        "(c) kcap run, net of an empty run",
        e2e_bs,
        c["images"],
        c["wall_s"] - runs["empty"]["wall_s"],
        c["cpu_s"] - runs["empty"]["cpu_s"],
        load_of(c),
        rss_c,
    )
    marginal = row(
        f"(c) kcap run, marginal ({c['images']} - {one['routed']} images)",
        e2e_bs,
        c["images"] - one["routed"],
        c["wall_s"] - one["wall_s"],
        c["cpu_s"] - one["cpu_s"],
        load_of(c),
        rss_c,
    )
    phases = runs["all"]["phases"]
    steady = 0.0
    if phases:
        # The first batch routes at once; the rest route between first and last.
        steady = row(
            "(c) kcap run, steady: first -> last routed",
            e2e_bs,
            c["images"] - e2e_bs,
            phases["first_to_last_routed_s"],
            None,
            load_of(c),
            rss_c,
        )
    hot = None
    if "u" in results:
        u = results["u"]
        hot = row(
            "(c) kcap up, hot folder: files dropped -> last routed",
            e2e_bs,
            u["images"],
            u["wall_s"],
            u["cpu_s"],
            load_of(u),
            f"tree {harness.mib(u['peak_tree_rss'])}",
        )
    headers = [
        "path",
        "batch",
        "images",
        "wall s",
        "images/s",
        "vs (a)",
        "CPU ms/image",
        "load avg",
        "peak RSS MiB",
    ]
    lines = [
        f"CPU benchmark: {plan.images} JPEG images {plan.width}x{plan.height}, Kosmos-2 'small' + "
        f"CLIP 'tiny' (random weights), fp32, exactly {plan.new_tokens} new tokens per image, "
        f"torch intra-op threads = {plan.threads} in every process",
        "",
        harness.markdown_table(headers, rows),
        "",
    ]
    b_ref = b_speed.get(e2e_bs, max(b_speed.values()))
    for bs, speed in b_speed.items():
        lines.append(f"b/a (batch {bs}): {speed / base_ips:.2f}x")
    if compiled_speed is not None:
        lines.append(
            f"--compile (batch {e2e_bs}): {compiled_speed / b_ref:.2f}x the eager (b); "
            f"its compile and warm-up at load took {results[compiled_name]['load_s']:.1f}s "
            f"(eager load {results[f'b{e2e_bs}']['load_s']:.1f}s)"
        )
    lines.append(
        f"c/b (batch {e2e_bs}): raw {raw / b_ref:.2f}, net of empty run {net / b_ref:.2f}, "
        f"marginal {marginal / b_ref:.2f}, steady {steady / b_ref:.2f}"
        + (f", hot folder (kcap up) {hot / b_ref:.2f}" if hot is not None else "")
        + "   (target >= 0.9)"
    )
    lines.append(
        f"kcap run start-up: empty run {runs['empty']['wall_s']:.1f}s; "
        f"one batch ({runs['one batch']['routed']} images) {runs['one batch']['wall_s']:.1f}s"
    )
    if phases:
        lines.append(
            f"kcap run phases ({c['images']} images): start -> first routed "
            f"{phases['start_to_first_routed_s']:.1f}s, first -> last routed "
            f"{phases['first_to_last_routed_s']:.1f}s, "
            f"last routed -> exit {phases['last_routed_to_exit_s']:.1f}s"
        )
    b_compiled = [compiled_name] if compiled_name in results else []
    lines.append(
        "model load incl. transformers import (not in the timed figures): "
        + ", ".join(f"{name} {results[name]['load_s']:.1f}s" for name in ["a", *plan.b_paths, *b_compiled])
    )
    lines.append(
        "batches run: "
        + "; ".join(
            f"{name}: {harness.histogram(results[name]['batch_sizes'])}"
            for name in [*plan.b_paths, *b_compiled]
        )
    )
    same = []
    for name in [*plan.b_paths, *b_compiled, "c", *(["u"] if "u" in results else [])]:
        equal, common = harness.agreement(a["captions"], results[name]["captions"])
        same.append(f"{name} {equal}/{common}")
    lines.append("captions identical to (a): " + ", ".join(same))
    lines.append(
        _cpu_line(f"kcap run CPU time by process ({c['images']} images, start to exit)", runs["all"])
    )
    if "u" in results:
        u = results["u"]
        lines.append(
            f"kcap up phases ({u['images']} images): dropped -> first routed "
            f"{u['phases']['drop_to_first_routed_s']:.1f}s (the 1 s stability gate, one batch), "
            f"first -> last routed {u['phases']['first_to_last_routed_s']:.1f}s"
        )
        lines.append(_cpu_line(f"kcap up CPU time by process ({u['images']} images, timed part)", u))
    counts = runs["all"]["counts"]
    lines.append(
        f"(c) routed: output {counts['output']}, clip_failed {counts['clip_failed']}, "
        f"errors {counts['errors']}"
    )
    lines.append(
        "peak RSS: (a), (b) ru_maxrss of their own process; (c) ru_maxrss of the largest kcap "
        "process (RUSAGE_CHILDREN), tree = summed RSS of kcap run and all its children, sampled; "
        "CPU ms/image: CPU time of the timed part, all threads ((c): all kcap processes); "
        "load avg: the machine's 1-minute load average before / after (others share these cores)"
    )
    return "\n".join(lines)


def _cpu_line(title: str, run: dict[str, Any]) -> str:
    images = max(1, run.get("images", run.get("routed", 0)))
    parts = [
        f"{role.split(' ')[0]} {seconds:.1f}s ({1000 * seconds / images:.0f} ms/image)"
        for role, seconds in sorted(run["cpu_by_role"].items(), key=lambda kv: -kv[1])
    ]
    return f"{title}: " + ", ".join(parts)


def score_tolerance(caption: str) -> float:
    """How far two paths' scores of one caption can differ: float32 on one CPU, a batch and a
    single image differ by rounding only, at most the tiny CLIP's chain at its logit scale (100)
    plus the mean over the caption's 77-character slices (tests/tolerances.py)."""
    slices = max(1, math.ceil(len(caption) / ORIGINAL_SLICE_CHARS))
    return float32_spread(_clip_chain() + slices + 1, scale=100.0)


@functools.cache
def _clip_chain() -> int:
    from workers.tiny.clip import clip_config

    # The benchmark's CLIP (cpu_plan.prepare_workdir); its vocabulary does not enter the chain.
    return dual_encoder_chain(clip_config(preset="tiny", vocab_size=1000, bos_token_id=0, eos_token_id=1))


def sanity(results: dict[str, dict[str, Any]], plan: Plan) -> list[str]:
    """What must hold whatever the speed: every image captioned, routed once, full length, and
    every path's captions, scores and routing equal to the original loop's (a)."""
    problems = []
    for name in plan.paths:
        r = results[name]
        if r["images"] != plan.images or len(r["captions"]) != plan.images:
            problems.append(f"{name}: {r['images']} images, {len(r['captions'])} captions of {plan.images}")
        counts = harness.word_counts(r["captions"])
        if counts != {plan.new_tokens}:
            problems.append(f"{name}: caption word counts {sorted(counts)}, expected {plan.new_tokens}")
    a = results["a"]
    for name in plan.paths[1:]:
        problems.extend(_differences(name, a, results[name], plan))
    for label, run in results["c"]["runs"].items():
        if run["routed"] != run["files"] or run["counts"]["errors"]:
            problems.append(f"kcap run ({label}): {run['counts']} for {run['files']} files")
    expected = _expected_counts(a["scores"].values())
    if results["c"]["runs"]["all"]["counts"] != expected:
        problems.append(
            f"kcap run: routed {results['c']['runs']['all']['counts']}, (a)'s scores say {expected}"
        )
    if "u" in results:
        first = a["scores"][min(a["scores"])]  # the warm-up file is a copy of the first image
        with_warmup = _expected_counts([*a["scores"].values(), first])
        if results["u"]["counts"] != with_warmup:
            problems.append(f"kcap up: routed {results['u']['counts']}, (a)'s scores say {with_warmup}")
    return problems


def _differences(name: str, a: dict[str, Any], other: dict[str, Any], plan: Plan) -> list[str]:
    """Where a path's captions or scores are not (a)'s, with the first file that differs."""
    problems = []
    mine, theirs = a["captions"], other["captions"]
    equal, common = harness.agreement(mine, theirs)
    if (equal, common) != (plan.images, plan.images):
        line = f"{name}: {equal} of {plan.images} captions identical to (a), {common} in both"
        differ = sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])
        if differ:
            line += f"; first: {differ[0]}: {mine[differ[0]]!r} vs {theirs[differ[0]]!r}"
        problems.append(line)
    scores = other.get("scores", {})
    off = sorted(
        k
        for k in a["scores"]
        if abs(a["scores"][k] - scores.get(k, float("inf"))) > score_tolerance(mine.get(k, ""))
    )
    if off:
        problems.append(
            f"{name}: {len(off)} of {plan.images} scores differ from (a)'s or are missing; "
            f"first: {off[0]}: {a['scores'][off[0]]:.4f} vs {scores.get(off[0])}"
        )
    return problems


def _expected_counts(scores: Any) -> dict[str, int]:
    """Where images with these scores land under the default threshold."""
    # No threshold given: CLIP's default (the original script's 15) routes these CLIP scores.
    threshold = DEFAULT_THRESHOLDS[ScorerFamily.CLIP]
    passed = sum(1 for score in scores if score >= threshold)
    failed = sum(1 for score in scores if score < threshold)
    return {"output": passed, "clip_failed": failed, "errors": 0}
