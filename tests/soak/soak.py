"""Soak: about 2,000 images through a real `kcap up`, while workers are killed and Redis restarts.

Usage (from the repository root)::

    .venv/bin/python -m tests.soak.soak                      # 2000 images, defaults below
    .venv/bin/python -m tests.soak.soak --images 300 --minutes 8   # a quick one
    make soak                                                 # when the Makefile has the target

What it does, in order:

1. Builds the tiny Kosmos-2 and CLIP checkpoints (tests/modelfactory.py) into a work folder
   (a temp dir unless --workdir) and passes them with --caption-model / --clip-model.
2. Starts `kcap up` as a subprocess with no broker URL, so kcap starts its own embedded Redis
   (append-only, under --state-dir). Settings are printed at start; the visibility timeout is
   short (10 s) so a killed worker's jobs come back promptly.
3. Drops the planned files into the input folder over --drop-seconds:
   good images (PNG and JPEG, 16 px to 1024 px, in nested sub-folders), about 2 % bad files
   (zero bytes, a truncated JPEG, text named .jpg), slow writers (a file written in chunks
   over about 1 s), duplicates (the same bytes dropped again under another name, some with
   the same stem and another extension) and re-touches (a file already dropped is rewritten
   with identical bytes, or only has its mtime bumped).
4. Chaos, while work remains and for at most --minutes: SIGKILL one random
   `kcap worker-process` (found through /proc under `kcap up`) 20-40 s after a worker process
   is (back) up; the clock starts at the respawn because kcap's restart back-off (1 s doubling
   to 60 s) resets only after a child stayed up 60 s, so at a fixed 20-40 s clock the back-off
   climbs to 60 s and the soak would kill mostly loading workers; once, while it copies one
   of 24 large JPEGs (about 4 MB each, dropped together halfway through the drops), SIGKILL
   the route worker: none of them may be filed as an error or left as a bare image; once, when
   about a third of the inputs are routed, stop the embedded redis-server that `kcap up`
   spawned (SIGTERM, or SIGKILL with --redis-signal KILL), watch for --redis-down-s seconds
   whether kcap notices or restarts it (it does not: that is reported), then start a
   redis-server again on the same port over the same append-only data folder (with
   shared.core.embedded_redis.EmbeddedRedis, exactly the arguments kcap uses), so the rest of the
   stack sees "Redis restarted" rather than "Redis gone for good".
5. Drains (no more chaos) until every input has a record or --drain-timeout-s passes, waits
   a settle period (visibility timeout + 5 s) for late duplicates, stops `kcap up` with
   SIGTERM and checks that no child process outlives it.
6. Prints a table: seen, routed to output, routed to clip-failed, errors, lost, duplicated,
   and more; the exit status is 1 when anything is lost or duplicated or an input was
   deleted or changed, 2 when the soak could not run at all, 0 otherwise.

Definitions used by the table:

- seen: distinct input files dropped (a re-touch is not a new input).
- lost: an input with no record in output, clip-failed or errors after the drain.
- duplicated: an input with more than one record, or an image copy of it in a root that no
  record names.
- orphan files: files in the roots that no record explains (not counted as duplicated when
  their bytes match no input).
- misrouted: a bad file that was captioned, or a good image that went to errors.

Every loop is bounded in count and in time; the soak stops by itself. Logs of `kcap up`
(and all its children) are in <workdir>/kcap-up.log; the work folder is kept with --keep
or on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.core.folder_lock import LOCK_NAME  # noqa: E402
from tests.integration.helpers import large_jpegs  # noqa: E402
from tests.soak.hostile import (  # noqa: E402  (after the path fix, when run as a file)
    SOAK_MAX_PIXELS,
    dead_letters_total,
    hostile_files,
    name_files,
    push_poison,
    read_by_descriptor,
    unauthenticated_successes,
    write_by_descriptor,
)

HOSTILE_KINDS = ("tall", "near-cap", "sidecar", "pause", "name", "deep")
# Large JPEGs, dropped together so that they are filed in the same route batches, for the
# route worker kill to land mid-copy; under SOAK_MAX_PIXELS, so they are captioned.
LARGE_FOLDER, LARGE_COUNT, LARGE_SIDE = "large", 24, 1800
FOLDERS = ("", "", "", "alpha", "beta", "beta/deep", "gamma/one/two", "delta", "epsilon/x")
SIZES = ((16, 16), (48, 32), (64, 48), (200, 150), (333, 222), (640, 480), (1024, 768))


# -- the plan ------------------------------------------------------------------------------
@dataclass
class Drop:
    """One input file: where it goes, its bytes, how it is written, what should become of it."""

    rel: str
    data: bytes
    kind: str  # good | bad | slow | dup, or a hostile kind: tall | near-cap | sidecar | pause
    bad: bool = False


@dataclass
class Action:
    """A step of the drop schedule: drop a new file, or re-touch one dropped earlier."""

    verb: str  # drop | rewrite | touch
    drop: Drop


def _encode(image: object, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)  # type: ignore[attr-defined]
    return buffer.getvalue()


def plan(n: int, rng: random.Random) -> list[Action]:
    """n distinct input files (and some re-touches of them), in drop order."""
    from PIL import Image

    from workers.tiny.images import tiny_images

    n_bad = max(3, round(n * 0.02))
    n_dup = max(2, round(n * 0.05))
    n_good = n - n_bad - n_dup
    images = []
    for index, size in enumerate(SIZES):
        share = n_good // len(SIZES) + (1 if index < n_good % len(SIZES) else 0)
        images += tiny_images(share, seed=1000 + index, size=size)
    rng.shuffle(images)
    drops: list[Drop] = []
    for i, image in enumerate(images):
        folder = rng.choice(FOLDERS)
        ext = "png" if rng.random() < 0.5 else "jpg"
        data = _encode(image, "PNG") if ext == "png" else _encode(image, "JPEG", quality=rng.randint(60, 95))
        kind = "slow" if rng.random() < 0.08 else "good"
        drops.append(Drop(f"{folder}/img_{i:05d}.{ext}".lstrip("/"), data, kind))
    noise = Image.effect_noise((64, 64), 60).convert("RGB")
    whole_jpeg = _encode(noise, "JPEG", quality=90)
    bad_bytes = (b"", whole_jpeg[: len(whole_jpeg) // 2], b"shopping list: eggs, milk\n" * 3)
    bad_names = ("empty", "truncated", "notes")
    for i in range(n_bad):
        which = i % 3
        folder = rng.choice(FOLDERS)
        drops.append(
            Drop(f"{folder}/bad_{bad_names[which]}_{i:04d}.jpg".lstrip("/"), bad_bytes[which], "bad", True)
        )
    for hostile in [*hostile_files(max(8, round(n * 0.02))), *name_files()]:
        drops.append(Drop(hostile.rel, hostile.data, hostile.kind, hostile.bad))
    rng.shuffle(drops)
    # Duplicates: the same bytes under another name, placed after their original.
    actions = [Action("drop", d) for d in drops]
    large = [
        Action("drop", Drop(f"{LARGE_FOLDER}/big_{i:03d}.jpg", data, "large"))
        for i, data in enumerate(large_jpegs(LARGE_COUNT, side=LARGE_SIDE, seed=rng.randrange(1000)))
    ]
    actions[len(actions) // 2 : len(actions) // 2] = large
    goods = [d for d in drops if not d.bad and d.kind != "name"]  # a copy's longer name may not fit
    for i in range(n_dup):
        original = rng.choice(goods)
        folder, _, name = original.rel.rpartition("/")
        stem, ext = name.rsplit(".", 1)
        if i % 3 == 0:  # same folder, same stem, other extension: a stem collision, same bytes
            rel = f"{folder}/{stem}.{'jpeg' if ext == 'jpg' else 'PNG'}".lstrip("/")
        else:
            rel = f"{rng.choice(FOLDERS)}/copy_{i:04d}_of_{stem}.{ext}".lstrip("/")
        after = next(j for j, a in enumerate(actions) if a.drop is original)
        actions.insert(rng.randint(after + 1, len(actions)), Action("drop", Drop(rel, original.data, "dup")))
    # Re-touches of files already dropped (the same bytes rewritten, or only a new mtime).
    for i in range(max(2, round(n * 0.05))):
        position = rng.randint(len(actions) // 10, len(actions))
        earlier = [
            a.drop for a in actions[: max(1, position - 5)] if a.verb == "drop" and a.drop.kind != "deep"
        ]
        actions.insert(position, Action("rewrite" if i % 2 == 0 else "touch", rng.choice(earlier)))
    return actions


# -- processes -----------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, comm, cmdline) of every process we can read."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        # comm is in parentheses and may hold spaces; the fields after the last ')' are fixed.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue  # a zombie is dead already
        table[int(entry)] = (int(fields[1]), comm, cmdline.strip())
    return table


def descendants(root: int) -> list[tuple[int, str, str]]:
    """(pid, comm, cmdline) of every live process below root."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append((pid, table[pid][1], table[pid][2]))
            todo += children.get(pid, [])
    return found


def _alive(pid: int) -> bool:
    table = _proc_table()
    return pid in table


def _ping(url: str) -> bool:
    import redis

    from shared.core.broker import redis_client

    client = redis_client(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- bookkeeping ---------------------------------------------------------------------------
@dataclass
class Tally:
    """What the folders say, read from the records on disk."""

    by_root: dict[str, dict[str, list[dict[str, object]]]] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)

    def sources(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for by_source in self.by_root.values():
            for source, records in by_source.items():
                counts[source] += len(records)
        return counts


def read_roots(roots: dict[str, Path], *, full: bool = False) -> Tally:
    """Records by root and source; with full, also files no record explains."""
    tally = Tally()
    for name, root in roots.items():
        by_source: dict[str, list[dict[str, object]]] = {}
        tally.by_root[name] = by_source
        if not root.exists():
            continue
        explained: set[Path] = set()
        for path in root.rglob("*.json"):
            is_error = path.name.endswith(".error.json")
            if path.name.startswith(".") or is_error != (name == "errors"):
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being replaced right now; the next look sees it
            record["_path"] = str(path)
            by_source.setdefault(str(record.get("source")), []).append(record)
            explained.add(path)
            if record.get("image"):
                explained.add(path.with_name(str(record["image"])))
            if not is_error:
                explained.add(path.with_suffix(".txt"))
        if not full:
            continue
        for path in root.rglob("*"):
            if not path.is_file() or path in explained:
                continue
            if path.suffix == ".jsonl" or path.name == LOCK_NAME:
                continue  # a folder-wide index (metadata.jsonl) or kcap's lock: not one image's files
            if path.name.startswith(".kcap-stale-"):
                tally.stale.append(str(path))
            elif path.name.startswith(".kcap-tmp-"):
                tally.temps.append(str(path))
            else:
                tally.orphans.append(str(path))
    return tally


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the soak ------------------------------------------------------------------------------
class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="kcap-soak-")).resolve()
        self.inbox = self.work / "in"
        self.output = self.work / "out" / "captioned"
        self.clip_failed = self.work / "out" / "clip_failed"
        self.errors = self.work / "out" / "errors"  # kcap's default: beside the output folder
        self.state = self.work / "state"
        self.roots = {"output": self.output, "clip_failed": self.clip_failed, "errors": self.errors}
        self.log_path = self.work / "kcap-up.log"
        self.kcap: subprocess.Popen[bytes] | None = None
        self.our_redis: object = None  # EmbeddedRedis we started after the restart
        self.unauthenticated: list[str] = []
        self.poison_pushed = 0
        self.dead_letters = 0
        self.dropped: dict[str, Drop] = {}
        self.written: set[str] = set()  # rel paths whose writes have finished
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.events: list[str] = []
        self.findings: list[str] = []
        self.stop_dropping = threading.Event()
        self.drops_done = threading.Event()
        self.large_dropped = threading.Event()
        self.kill_gaps: list[float] = []
        self.stopped = False
        self.pending_kill: tuple[int, float] | None = None
        self.next_kill = 0.0
        self.url: str | None = None
        self.inflight_left: int | str = "?"

    # -- reporting --------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        line = f"[soak {self.elapsed():7.1f}s] {message}"
        print(line, flush=True)

    def event(self, message: str) -> None:
        self.events.append(f"{self.elapsed():7.1f}s {message}")
        self.say(message)

    def log_tail_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def all_logs(self) -> str:
        """kcap up's console (warnings) and its log files (every line, one per role)."""
        texts = [self.log_tail_since(0)]
        for path in sorted((self.state / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(texts)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    # -- setup ------------------------------------------------------------------------------
    def build_models(self) -> tuple[Path, Path]:
        from workers.tiny.clip import build_clip
        from workers.tiny.kosmos2 import build_kosmos2

        started = time.monotonic()
        models = self.work / "models"
        kosmos = build_kosmos2(models / "kosmos2", preset="tiny")
        clip = build_clip(models / "clip", preset="tiny")
        self.say(f"tiny models built in {time.monotonic() - started:.1f}s under {models}")
        return kosmos, clip

    def settings_env(self) -> dict[str, str]:
        a = self.args
        return {
            "KCAP_VISIBILITY_TIMEOUT_S": str(a.visibility_timeout_s),
            "KCAP_STABLE_AFTER_S": str(a.stable_after_s),
            "KCAP_BATCH_SIZE": str(a.batch_size),
            "KCAP_MAX_NEW_TOKENS": str(a.max_new_tokens),
            "KCAP_THRESHOLD": str(a.threshold),
            "KCAP_RECONCILE_EVERY_S": str(a.reconcile_every_s),
            "KCAP_MAX_IN_FLIGHT": str(a.max_in_flight),
            "KCAP_STALE_CLAIM_S": str(a.stale_claim_s),
            "KCAP_GPUS": a.gpus,
            "KCAP_MAX_PIXELS": str(SOAK_MAX_PIXELS),
            "KCAP_LOG_LEVEL": "INFO",
        }

    def start_kcap(self, kosmos: Path, clip: Path) -> None:
        a = self.args
        self.inbox.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "shared.cli.main",
            "up",
            "--input-dir",
            str(self.inbox),
            "--output-dir",
            str(self.output),
            "--clip-failed-dir",
            str(self.clip_failed),
            "--state-dir",
            str(self.state),
            "--caption-model",
            str(kosmos),
            "--clip-model",
            str(clip),
        ]
        if a.no_flower:
            argv.append("--no-flower")
        else:
            argv += ["--flower-port", str(_free_port())]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KCAP_")}
        env.update(self.settings_env())
        env["PYTHONPATH"] = str(REPO)
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.settings_env().items()))
        self.say("settings: " + shown + " (no KCAP_BROKER_URL: kcap up starts its embedded Redis)")
        self.say("command: " + " ".join(argv[1:]))
        with self.log_path.open("wb") as log:
            self.kcap = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.say(f"kcap up started (pid {self.kcap.pid}); its log: {self.log_path}")

    def broker_url(self) -> str | None:
        """The embedded broker's URL; remembered, because kcap up deletes the file on exit."""
        try:
            self.url = (self.state / "broker_url").read_text().strip() or self.url
        except OSError:
            pass
        return self.url

    def wait_for_stack(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        assert self.kcap is not None
        while time.monotonic() < deadline:
            if self.kcap.poll() is not None:
                self.say(f"kcap up exited early with {self.kcap.returncode}")
                return False
            url = self.broker_url()
            workers = self.workers()
            if url and workers and "watching" in self.all_logs():
                from shared.core.redaction import mask_url_passwords

                shown = mask_url_passwords(url)
                self.say(f"stack up: broker {shown}, {len(workers)} caption worker process(es)")
                return True
            time.sleep(0.5)
        self.say(f"the stack did not come up within {timeout_s:.0f}s")
        return False

    def workers(self) -> list[int]:
        assert self.kcap is not None
        return [pid for pid, _, cmd in descendants(self.kcap.pid) if "worker-process" in cmd]

    def redis_pids(self) -> list[int]:
        assert self.kcap is not None
        return [pid for pid, comm, _ in descendants(self.kcap.pid) if comm.startswith("redis-server")]

    # -- dropping ---------------------------------------------------------------------------
    def write_now(self, drop: Drop) -> None:
        if drop.kind == "deep":  # over PATH_MAX: only descriptors reach it
            write_by_descriptor(self.inbox, drop.rel, drop.data)
            return
        path = self.inbox / drop.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(drop.data)

    def write_slowly(self, drop: Drop) -> None:
        """A copy in progress: 4-6 chunks, about 1 s in all; each pause well under the gate's."""
        path = self.inbox / drop.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        chunks = self.rng.randint(4, 6)
        step = max(1, -(-len(drop.data) // chunks))
        pause = min(0.3, 1.0 / chunks, self.args.stable_after_s / 3)
        with path.open("wb") as handle:
            for start in range(0, len(drop.data), step):
                handle.write(drop.data[start : start + step])
                handle.flush()
                time.sleep(pause)

    def write_pausing(self, drop: Drop) -> None:
        """A writer that stops longer than the stability wait: kcap reads its parts, and
        must file none of them as a bad image."""
        path = self.inbox / drop.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        step = max(1, -(-len(drop.data) // 3))
        with path.open("wb") as handle:
            for start in range(0, len(drop.data), step):
                handle.write(drop.data[start : start + step])
                handle.flush()
                time.sleep(self.args.stable_after_s * 1.6)

    def _finish(self, drop: Drop) -> None:
        with self.lock:
            self.written.add(drop.rel)

    def dropper(self, actions: list[Action]) -> None:
        pace = self.args.drop_seconds / max(1, len(actions))
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="slow-writer")
        started = time.monotonic()
        try:
            for index, action in enumerate(actions):
                if self.stop_dropping.is_set():
                    break
                # Keep to the schedule (bounded: never sleep more than the pace).
                target = started + index * pace
                delay = target - time.monotonic()
                if delay > 0:
                    self.stop_dropping.wait(min(delay, pace + 0.01))
                drop = action.drop
                if action.verb == "drop":
                    with self.lock:
                        if drop.rel in self.dropped:
                            continue  # two plans picked the same name: keep the first
                        self.dropped[drop.rel] = drop
                    self.counts[f"dropped {drop.kind}"] += 1
                    if drop.kind == "large":
                        self.large_dropped.set()
                    if drop.kind in ("slow", "pause"):
                        writer = self.write_slowly if drop.kind == "slow" else self.write_pausing
                        future = pool.submit(writer, drop)
                        future.add_done_callback(lambda _f, d=drop: self._finish(d))
                    else:
                        self.write_now(drop)
                        self._finish(drop)
                    continue
                with self.lock:
                    ready = drop.rel in self.written
                if not ready:
                    continue  # still being written: a re-touch now would be a different test
                path = self.inbox / drop.rel
                if action.verb == "rewrite":
                    path.write_bytes(drop.data)  # identical bytes, new mtime, a fresh event
                else:
                    os.utime(path)
                self.counts[f"re-touched ({action.verb})"] += 1
        finally:
            pool.shutdown(wait=True)
            self.drops_done.set()
            self.say(f"dropping finished: {len(self.dropped)} inputs, {self.counts_line()}")

    def counts_line(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))

    # -- chaos ------------------------------------------------------------------------------
    def kill_a_worker(self) -> None:
        workers = self.workers()
        if not workers:
            self.counts["kills skipped (no worker alive)"] += 1
            self.event("kill: no caption worker process alive (still restarting?); skipped")
            return
        pid = self.rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.counts["worker kills"] += 1
        self.event(f"SIGKILL caption worker pid {pid}")
        self.pending_kill = (pid, time.monotonic())

    def kill_the_router(self, why: str) -> None:
        """SIGKILL the route worker mid-write: nothing lost, doubled, left half-placed or
        filed as an error for it."""
        assert self.kcap is not None
        routers = [pid for pid, _, cmd in descendants(self.kcap.pid) if "router-process" in cmd]
        if not routers:
            self.event("router kill: no route worker process found; skipped")
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(routers[0], signal.SIGKILL)
        self.counts["router kills"] += 1
        self.event(f"SIGKILL route worker pid {routers[0]} {why}")

    def router_killer(self, until: float) -> None:
        """Once the large JPEGs are dropped, kill the route worker the moment it copies one
        (a temp file appears beside them), while the rest of its batch is in progress."""
        if not self.large_dropped.wait(max(0.0, until - time.monotonic())):
            return
        folders = [self.output / LARGE_FOLDER, self.clip_failed / LARGE_FOLDER]
        deadline = min(until, time.monotonic() + 180)
        while time.monotonic() < deadline and not self.stop_dropping.is_set():
            for folder in folders:
                with contextlib.suppress(OSError):
                    copying = [e.name for e in os.scandir(folder) if e.name.startswith(".kcap-tmp-")]
                    if copying:
                        self.kill_the_router(f"while it wrote {folder.name}/{copying[0]}")
                        return
            time.sleep(0.002)
        self.kill_the_router("(it was not seen copying a large image)")

    def check_respawn(self) -> None:
        """Time from the last kill until a new worker process runs (the supervisor's back-off)."""
        if self.pending_kill is None:
            return
        pid, killed_at = self.pending_kill
        if any(p != pid for p in self.workers()):
            self.kill_gaps.append(time.monotonic() - killed_at)
            self.pending_kill = None
            # The next kill is 20-40 s after a worker is back: kcap's restart back-off doubles up
            # to 60 s unless a child stayed up 60 s, so a fixed clock would kill loading workers.
            self.next_kill = time.monotonic() + self.rng.uniform(self.args.kill_min_s, self.args.kill_max_s)

    def restart_redis(self) -> None:
        """Stop the redis-server kcap up spawned; see whether kcap reacts; start one again."""
        from shared.core.embedded_redis import EmbeddedRedis

        url = self.broker_url()
        pids = self.redis_pids()
        if not url or not pids:
            self.event(f"redis restart: no embedded redis-server found (url {url}, pids {pids})")
            self.findings.append("could not find kcap up's redis-server to restart")
            return
        port = urlsplit(url).port  # None: kcap up's unix socket
        sig = signal.SIGKILL if self.args.redis_signal == "KILL" else signal.SIGTERM
        offset = self.log_size()
        os.kill(pids[0], sig)
        self.counts["redis restarts"] += 1
        self.event(f"{sig.name} to kcap up's redis-server pid {pids[0]} ({port or 'unix socket'})")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _ping(url):
            time.sleep(0.1)
        # Watch: does kcap up notice, restart its Redis, or exit?
        watch_until = time.monotonic() + self.args.redis_down_s
        came_back = False
        while time.monotonic() < watch_until:
            if _ping(url):
                came_back = True
                break
            time.sleep(0.25)
        assert self.kcap is not None
        alive = self.kcap.poll() is None
        new_redis = [p for p in self.redis_pids() if p != pids[0]]
        said = self.log_tail_since(offset)
        noticed = [
            line
            for line in said.splitlines()
            if "redis" in line.lower() and ("up" in line.lower() or "embedded" in line.lower())
        ]
        behaviour = (
            f"after {self.args.redis_down_s:.0f}s with its Redis dead: kcap up "
            f"{'still running' if alive else f'exited ({self.kcap.returncode})'}, "
            f"redis {'answered again' if came_back else 'still down'}, "
            f"new redis-server children of kcap up: {new_redis or 'none'}, "
            f"{said.count(' WARNING ')} warning / {said.count(' ERROR ')} error log lines, "
            f"kcap up's own lines about Redis: {len(noticed)}"
        )
        self.event(behaviour)
        if alive and not came_back:
            self.findings.append(
                "kcap up does not watch its embedded redis-server: when it dies, kcap up keeps "
                "running and nothing restarts it (the stack stalls until someone restarts Redis). "
                + behaviour
            )
        if came_back:
            return
        # The same data folder, password and (hence) socket path or port as kcap up's.
        server = EmbeddedRedis(
            self.state / "redis", port=port, password=unquote(urlsplit(url).password or "")
        )
        try:
            server.start(timeout_s=30)
        except Exception as exc:
            self.event(f"could not restart redis ({port or 'unix socket'}): {exc}")
            self.findings.append(f"soak could not restart redis ({port or 'unix socket'}): {exc}")
            return
        self.our_redis = server
        self.event(f"redis-server restarted by the soak at {server.where()} over {self.state / 'redis'}")

    # -- the run ----------------------------------------------------------------------------
    def accounted(self) -> tuple[int, Tally]:
        tally = read_roots(self.roots)
        sources = tally.sources()
        with self.lock:
            rels = list(self.dropped)
        return sum(1 for rel in rels if sources[rel] > 0), tally

    def run(self) -> int:
        a = self.args
        self.say(f"work folder {self.work}")
        actions = plan(a.images, self.rng)
        n_inputs = len({x.drop.rel for x in actions if x.verb == "drop"})
        self.say(f"planned {n_inputs} inputs and {sum(x.verb != 'drop' for x in actions)} re-touches")
        kosmos, clip = self.build_models()
        self.start_kcap(kosmos, clip)
        if not self.wait_for_stack(a.startup_timeout_s):
            self.stop_kcap()
            print(self.log_tail_since(max(0, self.log_size() - 4000)))
            return 2
        chaos_start = time.monotonic()
        chaos_end = chaos_start + a.minutes * 60
        dropper = threading.Thread(target=self.dropper, args=(actions,), name="dropper", daemon=True)
        dropper.start()
        self.next_kill = time.monotonic() + self.rng.uniform(a.kill_min_s, a.kill_max_s)
        redis_done = a.no_redis_restart
        url = self.broker_url() or ""
        self.unauthenticated = unauthenticated_successes(url)
        self.event(
            f"a local client without the password tried Redis: {self.unauthenticated or 'all refused'}"
        )
        poisoned = False
        if not a.no_kills:
            threading.Thread(
                target=self.router_killer, args=(chaos_end,), name="router-killer", daemon=True
            ).start()
        next_report = 0.0
        accounted = 0
        while time.monotonic() < chaos_end:
            accounted, tally = self.accounted()
            if self.drops_done.is_set() and accounted >= len(self.dropped):
                self.say("every input is accounted for; chaos ends")
                break
            if self.kcap is not None and self.kcap.poll() is not None:
                self.event(f"kcap up exited during the run with {self.kcap.returncode}")
                self.findings.append(f"kcap up exited mid-run with {self.kcap.returncode}")
                break
            now = time.monotonic()
            self.check_respawn()
            if not a.no_kills and now >= self.next_kill and self.pending_kill is None:
                self.kill_a_worker()
                self.next_kill = time.monotonic() + self.rng.uniform(a.kill_min_s, a.kill_max_s)
            if not poisoned and accounted >= n_inputs * 0.1:
                poisoned = True
                self.poison_pushed = push_poison(self.broker_url() or url, ("caption", "route"))
                self.event(f"pushed {self.poison_pushed} poison messages onto both queues")
            if not redis_done and accounted >= n_inputs * a.redis_restart_at:
                redis_done = True
                self.restart_redis()
            if now >= next_report:
                next_report = now + 15
                sources = {k: sum(len(v) for v in by.values()) for k, by in tally.by_root.items()}
                self.say(
                    f"dropped {len(self.dropped)}/{n_inputs}, accounted {accounted}, records {sources}, "
                    f"workers {len(self.workers())}, {self.counts_line()}"
                )
            time.sleep(1.0)
        else:
            self.say(f"--minutes {a.minutes} reached; chaos ends")
        self.stop_dropping.set()
        dropper.join(timeout=60)
        if not redis_done:
            self.findings.append("the run ended before the Redis restart point; no restart happened")
        # Drain: no chaos; wait for every input to have a record.
        drain_deadline = time.monotonic() + a.drain_timeout_s
        while time.monotonic() < drain_deadline:
            accounted, _ = self.accounted()
            if accounted >= len(self.dropped):
                break
            if self.kcap is not None and self.kcap.poll() is not None:
                break
            time.sleep(2.0)
        self.say(f"drain over: {accounted}/{len(self.dropped)} accounted; settling {a.settle_s:.0f}s")
        time.sleep(a.settle_s)
        final = read_roots(self.roots, full=True)
        self.inflight_left = self.count_inflight()
        try:
            self.dead_letters = dead_letters_total(self.broker_url() or "", "kcap:dead_letters:total")
        except Exception as exc:  # the table says it could not be read
            self.findings.append(f"could not read the dead-letter count: {exc}")
        self.stop_kcap()
        return self.report(final)

    def count_inflight(self) -> int | str:
        """In-flight claims still held in Redis once everything is routed (should be 0)."""
        import redis

        from shared.core.broker import redis_client

        url = self.broker_url()
        if not url:
            return "?"
        client = redis_client(url, socket_timeout=5)
        try:
            return int(client.zcard("kcap:inflight"))
        except redis.exceptions.RedisError as exc:
            return f"? ({exc})"
        finally:
            client.close()

    def stop_kcap(self) -> None:
        if self.kcap is None or self.stopped:
            return
        self.stopped = True
        before = {pid: cmd for pid, _, cmd in descendants(self.kcap.pid)}
        started = time.monotonic()
        if self.kcap.poll() is None:
            self.kcap.send_signal(signal.SIGTERM)
            try:
                self.kcap.wait(timeout=self.args.stop_timeout_s)
                self.say(
                    f"kcap up stopped on SIGTERM in {time.monotonic() - started:.1f}s "
                    f"(exit {self.kcap.returncode})"
                )
            except subprocess.TimeoutExpired:
                self.findings.append(f"kcap up did not stop within {self.args.stop_timeout_s}s of SIGTERM")
                os.killpg(self.kcap.pid, signal.SIGKILL)
                self.kcap.wait()
        time.sleep(1.0)
        table = _proc_table()
        left = {pid: cmd for pid, cmd in before.items() if pid in table and table[pid][2] == cmd}
        if left:
            self.findings.append(f"processes outlived kcap up: {left}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.our_redis is not None:
            self.our_redis.stop()  # type: ignore[attr-defined]

    # -- the table --------------------------------------------------------------------------
    def report(self, tally: Tally) -> int:
        sources = tally.sources()
        with self.lock:
            dropped = dict(self.dropped)
        lost = sorted(rel for rel in dropped if sources[rel] == 0)
        doubled = {rel for rel in dropped if sources[rel] > 1}
        unknown = sorted(s for s in sources if s not in dropped)
        by_sha: dict[str, list[str]] = {}
        for rel, drop in dropped.items():
            by_sha.setdefault(_sha(drop.data), []).append(rel)
        stray = []
        for path in tally.orphans:
            try:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                continue
            if digest in by_sha:
                doubled.update(r for r in by_sha[digest] if sources[r] > 0)  # a second image copy
            else:
                stray.append(path)
        misrouted = []
        for root, by_source in tally.by_root.items():
            for source, _records in by_source.items():
                drop = dropped.get(source)
                if drop is not None and drop.bad != (root == "errors"):
                    misrouted.append(f"{source} -> {root}")
        missing = []
        for rel, drop in dropped.items():
            if read_by_descriptor(self.inbox, rel) != drop.data:  # paths over PATH_MAX too
                missing.append(rel)
        n = {root: sum(len(r) for r in by.values()) for root, by in tally.by_root.items()}
        wall = self.elapsed()
        rows = [
            ("seen (inputs dropped)", len(dropped)),
            ("  of which bad files", sum(d.bad for d in dropped.values())),
            ("  of which slow writers", sum(d.kind == "slow" for d in dropped.values())),
            ("  of which duplicate bytes", sum(d.kind == "dup" for d in dropped.values())),
            ("  of which large JPEGs", sum(d.kind == "large" for d in dropped.values())),
            ("re-touched (same bytes)", sum(v for k, v in self.counts.items() if k.startswith("re-touched"))),
            ("routed to output", n["output"]),
            ("routed to clip-failed", n["clip_failed"]),
            ("errors", n["errors"]),
            ("lost", len(lost)),
            ("duplicated", len(doubled)),
            ("misrouted", len(misrouted)),
            ("records for unknown sources", len(unknown)),
            ("orphan files", len(stray)),
            ("stale copies set aside", len(tally.stale)),
            ("temp files left", len(tally.temps)),
            ("inputs deleted or changed", len(missing)),
            ("in-flight claims left", self.inflight_left),
            ("  of which hostile files", sum(d.kind in HOSTILE_KINDS for d in dropped.values())),
            ("poison messages pushed", self.poison_pushed),
            ("dead letters (all)", self.dead_letters),
            ("unauthenticated commands run", len(self.unauthenticated)),
            ("worker kills", self.counts["worker kills"]),
            ("route worker kills", self.counts["router kills"]),
            ("kills skipped (no worker)", self.counts["kills skipped (no worker alive)"]),
            ("redis restarts", self.counts["redis restarts"]),
            ("wall time", f"{wall:.0f} s ({wall / 60:.1f} min)"),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n" + "=" * (width + 16))
        print(f"{'kcap soak':<{width}}  {'value':>12}")
        print("-" * (width + 16))
        for key, value in rows:
            print(f"{key:<{width}}  {value!s:>12}")
        print("=" * (width + 16))
        if self.kill_gaps:
            gaps = ", ".join(f"{g:.0f}" for g in self.kill_gaps)
            print(f"seconds from each kill to a new worker process: {gaps}")
        if self.pending_kill is not None:
            print(f"no worker process came back after the last kill (pid {self.pending_kill[0]})")
        text = self.all_logs()
        signals = {
            k: text.count(k)
            for k in (
                "Traceback",
                "CRITICAL",
                "Unrecoverable error",
                "reject requeue=False",
                "Couldn't ack",
                "restarting in",
                "already routed",
                "changed since it was read",
            )
        }
        print("kcap up log: " + ", ".join(f"{k!r} x{v}" for k, v in signals.items()))
        for title, items in (
            ("lost", lost),
            ("duplicated", sorted(doubled)),
            ("misrouted", misrouted),
            ("unknown sources", unknown),
            ("orphan files", stray),
            ("inputs deleted or changed", missing),
        ):
            if items:
                print(f"{title} ({len(items)}): {', '.join(items[:20])}{' ...' if len(items) > 20 else ''}")
        print("events:")
        for line in self.events:
            print(f"  {line}")
        if self.findings:
            print("findings:")
            for line in self.findings:
                print(f"  - {line}")
        hostile_misrouted = [m for m in misrouted if dropped[m.split(" -> ")[0]].kind in HOSTILE_KINDS]
        left_overs = tally.temps + tally.stale
        failed = bool(
            lost
            or doubled
            or missing
            or hostile_misrouted
            or left_overs
            or self.unauthenticated
            or self.dead_letters < self.poison_pushed
        )
        for title, items in (
            ("hostile files misrouted", hostile_misrouted),
            ("left-overs", left_overs),
            ("unauthenticated", self.unauthenticated),
        ):
            if items:
                print(f"{title} ({len(items)}): {', '.join(items[:20])}")
        if failed or self.args.keep:
            print(f"work folder kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        print("SOAK " + ("FAILED" if failed else "PASSED"))
        return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="distinct inputs to drop (2000)")
    p.add_argument("--minutes", type=float, default=12, help="cap on the chaos phase (12)")
    p.add_argument("--drop-seconds", type=float, default=300, help="spread the drops over this long (300)")
    p.add_argument("--drain-timeout-s", type=float, default=300, help="wait for stragglers after chaos (300)")
    p.add_argument("--settle-s", type=float, default=None, help="wait for late duplicates (visibility + 5)")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--kill-min-s", type=float, default=20)
    p.add_argument("--kill-max-s", type=float, default=40)
    p.add_argument("--no-kills", action="store_true")
    p.add_argument("--no-redis-restart", action="store_true")
    p.add_argument("--redis-signal", choices=["TERM", "KILL"], default="TERM")
    p.add_argument("--redis-restart-at", type=float, default=0.33, help="fraction routed at the restart")
    p.add_argument("--redis-down-s", type=float, default=5, help="how long Redis stays down (5)")
    p.add_argument("--visibility-timeout-s", type=int, default=10)
    p.add_argument("--stable-after-s", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=16)
    # The tiny CLIP scores the tiny Kosmos-2's captions from about -30 to 16, median -4: -4 splits them.
    p.add_argument("--threshold", type=float, default=-4.0, help="CLIP threshold (-4 splits the tiny CLIP)")
    p.add_argument("--reconcile-every-s", type=float, default=60)
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument(
        "--stale-claim-s",
        type=float,
        default=120,
        help="resend a job claimed this long ago and never routed (120; kcap's default is 600)",
    )
    p.add_argument("--gpus", default="auto")
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--startup-timeout-s", type=float, default=180)
    p.add_argument("--stop-timeout-s", type=float, default=90)
    p.add_argument("--workdir", default=None, help="work folder (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder after a pass")
    args = p.parse_args(argv)
    if args.settle_s is None:
        args.settle_s = args.visibility_timeout_s + 5.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soak = Soak(args)
    previous: dict[int, Callable[..., object] | int | None] = {}

    def on_signal(signum: int, _frame: object) -> None:
        soak.say(f"signal {signum}: stopping kcap up")
        soak.stop_dropping.set()
        soak.stop_kcap()
        sys.exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        return soak.run()
    except BaseException:
        soak.stop_kcap()
        raise


if __name__ == "__main__":
    sys.exit(main())
