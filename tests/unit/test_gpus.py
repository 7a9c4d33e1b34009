"""Which GPUs `kcap worker` pins its children to, found without torch.

No GPU exists here, so the device list is faked the way a host presents it: a folder standing
in for /proc/driver/nvidia/gpus (one entry per device), or an inherited CUDA_VISIBLE_DEVICES
as a container runtime or a scheduler sets it. Nothing else is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.errors import ConfigError
from workers.captioning.gpus import Gpu, pinning_env, resolve_gpus, visible_devices


def _fake_driver(tmp_path: Path, count: int) -> Path:
    """A stand-in for /proc/driver/nvidia/gpus: the driver lists one folder per device."""
    root = tmp_path / "gpus"
    for i in range(count):
        (root / f"0000:0{i}:00.0").mkdir(parents=True)
    return root


def test_the_host_devices_are_counted_from_the_driver_listing(tmp_path: Path) -> None:
    assert visible_devices({}, proc_gpus=_fake_driver(tmp_path, 4), nvidia_smi="") == ["0", "1", "2", "3"]
    assert visible_devices({}, proc_gpus=tmp_path / "absent", nvidia_smi="") is None


def test_an_inherited_device_list_wins_and_indices_count_within_it(tmp_path: Path) -> None:
    driver = _fake_driver(tmp_path, 8)
    env = {"CUDA_VISIBLE_DEVICES": "4,5,7"}
    visible = visible_devices(env, proc_gpus=driver)
    assert visible == ["4", "5", "7"]
    # --gpus 0,2 means the first and third of *kcap's* devices: host GPUs 4 and 7, not 0 and 2.
    assert resolve_gpus("0,2", visible) == [Gpu(0, "4"), Gpu(2, "7")]
    assert [pinning_env(g) for g in resolve_gpus("all", visible)] == [
        {"CUDA_VISIBLE_DEVICES": "4"},
        {"CUDA_VISIBLE_DEVICES": "5"},
        {"CUDA_VISIBLE_DEVICES": "7"},
    ]


def test_gpu_uuids_pass_through_untouched() -> None:
    uuids = "GPU-8c7ad1f0-0000-1111-2222-333344445555, GPU-11111111-aaaa-bbbb-cccc-dddddddddddd"
    visible = visible_devices({"CUDA_VISIBLE_DEVICES": uuids})
    assert resolve_gpus("1", visible) == [Gpu(1, "GPU-11111111-aaaa-bbbb-cccc-dddddddddddd")]


def test_an_empty_inherited_list_means_no_gpu_and_one_cpu_worker(tmp_path: Path) -> None:
    visible = visible_devices({"CUDA_VISIBLE_DEVICES": ""}, proc_gpus=_fake_driver(tmp_path, 2))
    assert visible == []
    assert resolve_gpus("auto", visible) == [None]
    assert pinning_env(None) == {"CUDA_VISIBLE_DEVICES": ""}


def test_indices_beyond_the_visible_devices_are_refused_with_the_list() -> None:
    with pytest.raises(ConfigError, match=r"only 2 GPU\(s\) are visible to kcap \(4,5\)"):
        resolve_gpus("0,2", ["4", "5"])
    for bad in ("1,1", "-1", "x"):
        with pytest.raises(ConfigError):
            resolve_gpus(bad, ["0", "1"])


def test_without_any_listing_explicit_indices_are_pinned_as_given() -> None:
    assert resolve_gpus("0,2", None) == [Gpu(0, "0"), Gpu(2, "2")]
    assert resolve_gpus("auto", None) == [None]
