"""The supervisor on real, short-lived child processes: restarts with back-off, and a stop
that signals every child at once and leaves nothing alive."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cli.exits import Exit
from shared.cli.supervisor import ProcessGroup
from shared.core.errors import ConfigError
from shared.core.settings import Settings
from tests.conftest import wait_for

EXIT_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# Ignores SIGTERM, as a wedged worker would.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(") ", 1)[1][0] != "Z"


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    processes = ProcessGroup(backoff_s=0.1, max_backoff_s=0.4, stable_after_s=60.0, stop_timeout_s=5.0)
    yield processes
    processes.stop(timeout_s=1.0)


def test_a_dying_child_is_restarted_with_doubling_back_off(group: ProcessGroup) -> None:
    child = group.start("crasher", EXIT_3, env=dict(os.environ))
    restarted_at: list[float] = []
    deadline = time.monotonic() + 20
    while child.restarts < 4 and time.monotonic() < deadline:
        before = child.restarts
        assert group.poll() == []  # restartable children are never reported dead
        if child.restarts > before:
            restarted_at.append(time.monotonic())
        time.sleep(0.01)
    assert child.restarts == 4
    assert child.process is not None and child.process.args == EXIT_3
    gaps = [b - a for a, b in itertools.pairwise(restarted_at)]
    # 0.1 s, then 0.2, 0.4, capped at 0.4 (plus the time the child takes to exit).
    assert gaps[0] >= 0.2 - 0.02 and gaps[1] >= 0.4 - 0.02 and gaps[2] >= 0.4 - 0.02
    assert child.backoff_s == 0.4  # the cap itself, as min() returns it


def test_back_off_starts_over_after_a_child_stayed_up(tmp_path: Path) -> None:
    # A quick death must stay under stable_after_s even on a loaded machine.
    group = ProcessGroup(backoff_s=0.05, max_backoff_s=10.0, stable_after_s=1.0, stop_timeout_s=1.0)
    try:
        child = group.start("flaky", EXIT_3, env=dict(os.environ))
        wait_for(lambda: not group.poll() and child.restarts >= 3, timeout_s=10, what="3 quick restarts")
        assert child.backoff_s >= 0.4  # 0.05 doubled at each quick death
        child.argv = [sys.executable, "-c", "import sys, time; time.sleep(1.2); sys.exit(3)"]
        wait_for(lambda: not group.poll() and child.restarts >= 4, timeout_s=10, what="a restart")
        assert child.process is not None
        child.process.wait(timeout=10)  # this one stayed up longer than stable_after_s
        group.poll()
        assert child.next_start > 0
        # Started over from 0.05, then doubled once: doubling is exact in binary, and 2 x
        # float(0.05) is float(0.1).
        assert child.backoff_s == 0.1
    finally:
        group.stop(timeout_s=1.0)


def test_a_child_without_restart_is_reported_dead(group: ProcessGroup) -> None:
    child = group.start("one-shot", EXIT_3, env=dict(os.environ), restart=False)
    wait_for(lambda: group.poll() == [child], timeout_s=10, what="the one-shot reported dead")
    assert child.restarts == 0 and child.process is not None and child.process.returncode == 3


def test_a_child_that_stopped_on_its_own_error_is_not_restarted(group: ProcessGroup) -> None:
    # `kcap worker-process` with a model it cannot load: it prints why and exits Exit.ERROR.
    said_why = [sys.executable, "-c", f"import sys; sys.exit({int(Exit.ERROR)})"]
    child = group.start("cannot start", said_why, env=dict(os.environ))
    wait_for(lambda: group.poll() == [child], timeout_s=10, what="the child reported dead")
    time.sleep(0.5)  # several back-off periods: a restart would have happened by now
    assert group.poll() == [child]
    assert child.restarts == 0 and child.process is not None and child.process.returncode == Exit.ERROR


def test_stop_signals_every_child_first_and_shares_one_deadline(tmp_path: Path) -> None:
    group = ProcessGroup()
    stubborn = [group.start(f"stubborn{i}", STUBBORN, env=dict(os.environ)) for i in range(3)]
    polite = [group.start(f"sleeper{i}", SLEEP, env=dict(os.environ)) for i in range(2)]
    wait_for(  # SIGTERM must be ignored already when we stop
        lambda: all(_ignores_sigterm(c.process.pid) for c in stubborn if c.process is not None),
        timeout_s=20,
        what="stubborn children ready",
    )
    pids = [c.process.pid for c in stubborn + polite if c.process is not None]

    started = time.monotonic()
    group.stop(timeout_s=1.5)
    took = time.monotonic() - started

    # One-by-one with 1.5 s each would take 4.5 s for the three stubborn ones.
    assert 1.4 <= took < 3.5, took
    assert not any(_alive(pid) for pid in pids)
    assert [c.process.returncode for c in polite if c.process is not None] == [-15, -15]
    assert [c.process.returncode for c in stubborn if c.process is not None] == [-9, -9, -9]
    assert group.children == []


def test_stop_also_ends_what_a_child_started_in_its_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spawner = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)",
    ]
    group = ProcessGroup()
    group.start("spawner", spawner, env=dict(os.environ))
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", timeout_s=20, what="grandchild")
    grandchild = int(pid_file.read_text())
    assert _alive(grandchild)
    group.stop(timeout_s=2.0)
    wait_for(lambda: not _alive(grandchild), timeout_s=5, what="the grandchild gone")


def test_stop_timeout_comes_from_the_environment() -> None:
    assert Settings.build({}).stop_timeout_s == 30.0
    assert Settings.build({"KCAP_STOP_TIMEOUT_S": "2.5"}).stop_timeout_s == 2.5
    with pytest.raises(ConfigError, match="KCAP_STOP_TIMEOUT_S"):
        Settings.build({"KCAP_STOP_TIMEOUT_S": "soon"})


def _ignores_sigterm(pid: int) -> bool:
    """The process has SIGTERM in its ignored set (bit 15 of SigIgn)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (15 - 1)))
    return False


def test_children_die_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    # A supervisor killed outright (SIGKILL: no chance to stop its children) leaves no orphan.
    script = tmp_path / "supervisor.py"
    script.write_text(
        "import sys, time\n"
        "from shared.cli.supervisor import ProcessGroup\n"
        "group = ProcessGroup()\n"
        "child = group.start('sleeper', [sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'], env={})\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    repo = Path(__file__).parents[2]
    supervisor = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert supervisor.stdout is not None
    child_pid = int(supervisor.stdout.readline())
    supervisor.kill()
    supervisor.wait()
    supervisor.stdout.close()

    def child_gone() -> bool:
        try:
            state = Path(f"/proc/{child_pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        return state == "Z"  # dead, waiting for init to reap it

    wait_for(child_gone, timeout_s=10, what="the child to die with its supervisor")
