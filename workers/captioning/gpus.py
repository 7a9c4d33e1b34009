"""Which GPUs `kcap worker` runs on, found without loading torch, and how each child is pinned.

A GPU is named to CUDA by CUDA_VISIBLE_DEVICES. When kcap itself was started with that
variable set (a container runtime, Slurm, a Kubernetes device plugin), only those devices
are kcap's, and `--gpus 0,2` counts within them: the children get the inherited entries
(indices or GPU-... UUIDs), never the host's own numbering.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.core.errors import ConfigError

log = logging.getLogger(__name__)

NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Gpu:
    """One device as kcap sees it: its place among the visible ones, and CUDA's name for it."""

    index: int  # 0.. within the devices visible to kcap; names the worker (gpu<index>@host)
    cuda_id: str  # what the child's CUDA_VISIBLE_DEVICES holds: an index or a GPU-... UUID


def visible_devices(
    environ: Mapping[str, str] | None = None,
    *,
    proc_gpus: Path = NVIDIA_PROC_GPUS,
    nvidia_smi: str | None = None,
) -> list[str] | None:
    """CUDA's names for the devices this process may use; None when no GPU could be found.

    An inherited CUDA_VISIBLE_DEVICES wins (empty means none). Otherwise the driver's own
    list under /proc, then `nvidia-smi -L`, count the host's devices.
    """
    env = os.environ if environ is None else environ
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        return [entry.strip() for entry in inherited.split(",") if entry.strip()]
    try:
        count = sum(1 for _ in proc_gpus.iterdir())
    except OSError:
        count = _count_with_nvidia_smi(nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi"))
    return [str(i) for i in range(count)] if count else None


def _count_with_nvidia_smi(executable: str | None) -> int:
    if not executable:
        return 0
    try:
        listing = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def resolve_gpus(spec: str, visible: list[str] | None) -> list[Gpu | None]:
    """The devices to run one worker process on each; [None] means one CPU worker.

    spec is `auto`, `all`, `cpu` or indices like `0,2` counted among the visible devices.
    """
    spec = spec.strip().lower()
    if spec == "cpu":
        return [None]
    if spec in ("auto", "all"):
        if not visible:
            if spec == "all":
                log.warning("--gpus all, but no GPU is visible; running one CPU worker")
            return [None]
        return [Gpu(i, cuda_id) for i, cuda_id in enumerate(visible)]
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus must be auto, cpu, all or a list like 0,2,3, not {spec!r}") from None
    if not indices or len(set(indices)) != len(indices) or min(indices) < 0:
        raise ConfigError(f"--gpus {spec!r}: give distinct non-negative GPU indices")
    if visible is None:
        # No driver listing here (another vendor, a restricted container): trust the indices.
        log.warning("--gpus %s: no GPU listing found on this host; pinning the indices as given", spec)
        return [Gpu(i, str(i)) for i in indices]
    too_high = [i for i in indices if i >= len(visible)]
    if too_high:
        raise ConfigError(
            f"--gpus {spec!r}: only {len(visible)} GPU(s) are visible to kcap "
            f"({','.join(visible) or 'none'}); indices count from 0 among them"
        )
    return [Gpu(i, visible[i]) for i in indices]


def pinning_env(gpu: Gpu | None) -> dict[str, str]:
    """The child sees exactly its one GPU (it calls it cuda:0), or none at all."""
    return {"CUDA_VISIBLE_DEVICES": "" if gpu is None else gpu.cuda_id}
