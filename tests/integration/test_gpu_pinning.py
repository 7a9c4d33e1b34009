"""`kcap worker` pins each child to its own device, inside an inherited device list.

There is no GPU here: the device list is the one a container runtime or a scheduler hands
kcap, an inherited CUDA_VISIBLE_DEVICES of GPU UUIDs. The children are real processes; the
test reads what each one really got from /proc. (Without a GPU each child then runs on the
CPU, which is all this test needs of it.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared.core.settings import Settings
from tests.conftest import Processes, wait_for

UUIDS = [
    "GPU-00000000-1111-2222-3333-444444444444",
    "GPU-55555555-6666-7777-8888-999999999999",
    "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _argv(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def test_gpus_0_and_2_are_the_first_and_third_inherited_devices(
    make_settings: Callable[..., Settings], redis_url: str, procs: Processes
) -> None:
    settings = make_settings(broker_url=redis_url, gpus="0,2")
    supervisor = procs.kcap("worker", settings=settings, extra_env={"CUDA_VISIBLE_DEVICES": ",".join(UUIDS)})

    def both_children() -> bool:
        return len([p for p in _children(supervisor.pid) if "worker-process" in _argv(p)]) == 2

    wait_for(both_children, timeout_s=30, what="two worker processes", logs=procs.tail)
    pinned = {}
    for pid in _children(supervisor.pid):
        argv = _argv(pid)
        name = argv[argv.index("--name") + 1]
        pinned[name.split("@")[0]] = _environ(pid)["CUDA_VISIBLE_DEVICES"]
    assert pinned == {"gpu0": UUIDS[0], "gpu2": UUIDS[2]}, pinned
    assert os.environ.get("CUDA_VISIBLE_DEVICES") != ",".join(UUIDS)  # the test's own env is untouched
