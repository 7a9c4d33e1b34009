"""The measured workloads and the measuring tools the three benchmarks share.

Two ways to caption a list of image files, both on the same checkpoints:

- ``baseline_loop``: shaped like the one-file script kcap descends from. One image at a
  time, written straight against transformers (no kcap code), so it is an honest baseline.
- ``kcap_batched``: kcap's worker path in one process: jobs built from the files as the
  producer builds them, ``Engine.prepare`` on a thread pool (Celery's pool threads in
  production) feeding a ``Batcher`` whose single thread calls ``Engine.run_batch``.

Both return the caption of every file, so a benchmark can check that the fast path writes
what the slow one writes. Speed is reported, never asserted: these machines are shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from shared.core.messages import Job
from shared.core.naming import job_id_for
from shared.core.parent_death import die_with_parent
from shared.core.settings import Settings

MIB = 1024 * 1024


# --------------------------------------------------------------------------
# Inputs


def write_images(folder: Path, count: int, *, size: tuple[int, int], seed: int = 7) -> list[Path]:
    """``count`` distinct JPEG files (camera-like input), the same for the same arguments."""
    from workers.tiny.images import tiny_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(tiny_images(count, seed=seed, size=size)):
        path = folder / f"img_{i:04d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def jobs_from_files(root: Path, paths: Sequence[Path], settings: Settings) -> list[Job]:
    """One Job per file, built from settings as producer.enqueue.Enqueuer.offer builds it."""
    jobs = []
    for path in paths:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        sha = hashlib.sha256(data).hexdigest()
        jobs.append(
            Job(
                job_id=job_id_for(rel, sha),
                rel_path=rel,
                content_sha256=sha,
                size=len(data),
                mtime=path.stat().st_mtime,
                image_b64=Job.encode_bytes(data),
                enqueued_at=time.time(),
                # every benchmark path scores
                options=replace(settings.caption_options(), score=True),
            )
        )
    return jobs


# --------------------------------------------------------------------------
# Results


@dataclass
class Run:
    """What one measured path did: its timed images, wall time and captions by file name."""

    name: str
    images: int
    wall_s: float
    load_s: float = 0.0
    captions: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    peak_gpu_bytes: int | None = None
    cpu_s: float = 0.0  # CPU time of the whole process (all threads) over the timed part
    load_avg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


# --------------------------------------------------------------------------
# (a) the original script's loop


class BaselineLoop:
    """Batch 1, one image after another: open, process, generate, decode, score.

    Like the original script it runs the processor on prompt and image together for every
    image and decodes prompt plus caption, then cuts the prompt off the text. CLIP scores
    each caption as the script did: cut into 77-*character* pieces, all pieces with the
    image in one padded processor call, the mean of logits_per_image. (truncation=True and
    one empty piece for an empty caption keep the loop going where the script's call would
    fail, as kcap does; the benchmark's captions never need either.)
    """

    def __init__(
        self, caption_model: str, clip_model: str, *, device: torch.device, dtype: torch.dtype
    ) -> None:
        started = time.perf_counter()  # with the transformers import, as Engine.load's figure is
        from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel

        self.device = device
        self.dtype = dtype
        self.processor: Any = AutoProcessor.from_pretrained(caption_model)
        self.model: Any = (
            AutoModelForImageTextToText.from_pretrained(caption_model, dtype=dtype).to(device).eval()
        )
        self.clip_processor: Any = AutoProcessor.from_pretrained(clip_model)
        self.clip: Any = CLIPModel.from_pretrained(clip_model, dtype=dtype).to(device).eval()
        self.load_s = time.perf_counter() - started

    def caption_and_score(self, path: Path, *, prompt: str, max_new_tokens: int) -> tuple[str, float]:
        from PIL import Image

        with Image.open(path) as opened:
            image = opened.convert("RGB")
        inputs = self.processor(text=prompt, images=image, return_tensors="pt")
        with torch.no_grad():
            generated = self.model.generate(
                pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
                image_embeds=None,
                image_embeds_position_mask=inputs["image_embeds_position_mask"].to(self.device),
                use_cache=True,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,  # a fixed length for every path
            )
        text = self.processor.batch_decode(generated, skip_special_tokens=True)[0]
        processed, _entities = self.processor.post_process_generation(text)
        caption = processed[len(prompt) :] if processed.startswith(prompt) else processed
        caption = caption.strip()

        pieces = [caption[i : i + 77] for i in range(0, len(caption), 77)] or [""]
        clip_inputs = self.clip_processor(
            text=pieces, images=image, return_tensors="pt", padding=True, truncation=True
        )
        clip_inputs["pixel_values"] = clip_inputs["pixel_values"].to(self.dtype)
        with torch.no_grad():
            out = self.clip(**clip_inputs.to(self.device))
        score = float(out.logits_per_image[0].float().mean())
        return caption, score

    def run(self, paths: Sequence[Path], *, root: Path, prompt: str, max_new_tokens: int) -> Run:
        self.caption_and_score(paths[0], prompt=prompt, max_new_tokens=max_new_tokens)  # warm-up
        synchronize(self.device)
        reset_peak_gpu(self.device)
        captions, scores = {}, {}
        cpu_started, load_before = time.process_time(), os.getloadavg()[0]
        started = time.perf_counter()
        for path in paths:
            rel = path.relative_to(root).as_posix()
            captions[rel], scores[rel] = self.caption_and_score(
                path, prompt=prompt, max_new_tokens=max_new_tokens
            )
        synchronize(self.device)
        wall_s = time.perf_counter() - started
        cpu_s, load_after = time.process_time() - cpu_started, os.getloadavg()[0]
        return Run(
            name="baseline",
            images=len(paths),
            wall_s=wall_s,
            cpu_s=cpu_s,
            load_avg=(load_before, load_after),
            load_s=self.load_s,
            captions=captions,
            scores=scores,
            batch_sizes=[1] * len(paths),
            peak_gpu_bytes=peak_gpu(self.device),
        )


# --------------------------------------------------------------------------
# (b) kcap's batched path, in process


def kcap_batched(
    engine: Any,
    jobs: Sequence[Job],
    *,
    batch_size: int,
    batch_wait_s: float = 0.05,
    warmup: Sequence[Job] = (),
) -> Run:
    """Prepare on a pool of 2 x batch_size threads (as the Celery worker does), batch, run.

    ``warmup`` jobs go through one untimed ``run_batch`` first (lazy initialisation,
    allocator warm-up), so the timed figure is the steady state.
    """
    from workers.captioning.batcher import Batcher

    device = engine.captioner.device
    if warmup:
        batch = list(warmup)[:batch_size]
        first = batch[0].options
        engine.run_batch(first.for_prompt(first.prompt), [engine.prepare(job) for job in batch])
    synchronize(device)
    reset_peak_gpu(device)
    batcher = Batcher(engine.run_batch, max_size=batch_size, max_wait_s=batch_wait_s).start()

    def one(job: Job) -> Any:
        # As the caption task: one batch item per prompt, the best score wins.
        prepared = engine.prepare(job)
        futures = [batcher.submit(job.options.for_prompt(p), prepared) for p in job.options.prompts]
        done = [future.result() for future in futures]
        return max(done, key=lambda d: -1e9 if d.score is None else d.score)

    cpu_started, load_before = time.process_time(), os.getloadavg()[0]
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(2 * batch_size, thread_name_prefix="kcap-bench-prepare") as pool:
            done = list(pool.map(one, jobs))
    finally:
        batcher.stop()
    synchronize(device)
    wall_s = time.perf_counter() - started
    cpu_s, load_after = time.process_time() - cpu_started, os.getloadavg()[0]
    return Run(
        name=f"kcap batch {batch_size}",
        images=len(jobs),
        wall_s=wall_s,
        cpu_s=cpu_s,
        load_avg=(load_before, load_after),
        captions={job.rel_path: d.text for job, d in zip(jobs, done, strict=True)},
        scores={job.rel_path: d.score for job, d in zip(jobs, done, strict=True) if d.score is not None},
        batch_sizes=sorted(batcher.batch_sizes.elements()),
        peak_gpu_bytes=peak_gpu(device),
    )


def check_fixed_length(engine: Any, job: Job, *, new_tokens: int) -> None:
    """Engine.run_batch passes no min_new_tokens: prove the model still writes every token.

    The model factory mutes EOS (and every non-word piece), so generation never stops early;
    this checks it on the real checkpoint rather than trusting it.
    """
    prepared = engine.prepare(job)
    ids = engine.captioner.forward(
        [prepared.caption_pixels], prompt=job.options.prompt, max_new_tokens=new_tokens
    )  # no min_new_tokens, as run_batch calls it
    eos = engine.captioner.model.generation_config.eos_token_id
    pad = engine.captioner.model.generation_config.pad_token_id
    if ids.shape[1] != new_tokens or bool(((ids == eos) | (ids == pad)).any()):
        raise AssertionError(
            f"generation stopped early or padded: {ids.shape[1]} new tokens of {new_tokens} "
            f"({ids.tolist()}); the benchmark needs a model that never emits EOS"
        )


def agreement(reference: dict[str, str], other: dict[str, str]) -> tuple[int, int]:
    """(identical captions, files in both)."""
    common = reference.keys() & other.keys()
    return sum(reference[k] == other[k] for k in common), len(common)


def word_counts(captions: dict[str, str]) -> set[int]:
    """Every generated token of the benchmark models is one whole word."""
    return {len(text.split()) for text in captions.values()}


# --------------------------------------------------------------------------
# Measuring


def run_child(script: Path, args: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> Any:
    """Run a benchmark script's child mode (``script args --json-out F``) in a fresh process,
    its output to log_path; returns what it wrote to F. A failure raises with the log's end."""
    json_out = log_path.with_suffix(".json")
    argv = [sys.executable, str(script), *args, "--json-out", str(json_out)]
    repo = Path(__file__).resolve().parents[2]
    with log_path.open("wb") as log:
        done = subprocess.run(
            argv,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(repo)},
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            preexec_fn=die_with_parent(),
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({done.returncode}); log:\n{log_path.read_text()[-6000:]}"
        )
    return json.loads(json_out.read_text())


def set_threads(count: int) -> None:
    torch.set_num_threads(count)


def thread_env(count: int) -> dict[str, str]:
    """Environment that gives a child process's torch the same intra-op thread count."""
    return {"OMP_NUM_THREADS": str(count), "MKL_NUM_THREADS": str(count)}


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """ru_maxrss (KiB on Linux): the peak of this process, or of its largest reaped child."""
    return resource.getrusage(who).ru_maxrss * 1024


def current_rss_bytes(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _descendants(root_pid: int) -> list[int]:
    tree = _children_of()
    found, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(tree.get(pid, []))
    return found


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, summed (from /proc)."""
    return sum(current_rss_bytes(pid) for pid in _descendants(root_pid))


def rss_by_role(root_pid: int) -> dict[str, int]:
    """Resident memory of a process tree, summed by role (process_role)."""
    roles: dict[str, int] = {}
    for pid in _descendants(root_pid):
        role = process_role(pid)
        roles[role] = roles.get(role, 0) + current_rss_bytes(pid)
    return roles


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, all its threads (from /proc)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime and stime are fields 14 and 15 of stat; these fields start at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_role(pid: int) -> str:
    """A short name for a kcap process: the kcap subcommand, or the program's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return "?"
    if "shared.cli.main" in argv:
        rest = argv[argv.index("shared.cli.main") + 1 :]
        return next((a for a in rest if not a.startswith("-")), "kcap")
    return Path(argv[0]).name if argv else "?"


class TreeRssSampler:
    """Samples a process tree every interval_s: the peak of its summed RSS, and the CPU
    time of each process (the last reading before it ended), summed by role."""

    def __init__(self, root_pid: int, *, interval_s: float = 0.25) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kcap-bench-rss", daemon=True)

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of the tree by role; a process that ends between two samples loses
        at most interval_s of its CPU time."""
        roles: dict[str, float] = {}
        for role, seconds in self._cpu.values():
            roles[role] = roles.get(role, 0.0) + seconds
        return roles

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = _descendants(self.root_pid)
            self.peak_bytes = max(self.peak_bytes, sum(current_rss_bytes(pid) for pid in pids))
            for pid in pids:
                seconds = cpu_seconds(pid)
                if seconds is None:
                    continue
                role = self._cpu[pid][0] if pid in self._cpu else process_role(pid)
                self._cpu[pid] = (role, seconds)
            self._stop.wait(self.interval_s)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_gpu(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


# --------------------------------------------------------------------------
# Printing


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def histogram(sizes: Sequence[int]) -> str:
    """'16x12, 8x1': how many batches of each size ran."""
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return ", ".join(f"{size}x{n}" for size, n in sorted(counts.items(), reverse=True))
