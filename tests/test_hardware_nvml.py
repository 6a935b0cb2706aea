"""GPU code paths against a fake `pynvml`: only the NVML library boundary is faked (issue 8)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, hardware, hardware_probes
from drasill_cli.config import BudgetsConfig, Config
from drasill_cli.mesh import Mesh

GIB = 1024**3


class FakeNVMLError(Exception):
    """Stands for pynvml.NVMLError."""


def fake_pynvml(
    devices: list[dict[str, Any]], *, init_fails: bool = False, calls: list[str] | None = None
) -> types.ModuleType:
    """A module with the pynvml functions hardware.py calls, answering from `devices`."""
    log = calls if calls is not None else []
    module = types.ModuleType("pynvml")

    def init() -> None:
        log.append("init")
        if init_fails:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def processes(handle: int) -> list[types.SimpleNamespace]:
        found = devices[handle]["processes"]
        if isinstance(found, Exception):
            raise found
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in found]

    def memory(handle: int) -> types.SimpleNamespace:
        device = devices[handle]
        return types.SimpleNamespace(
            total=device["total"], used=device["used"], free=device["total"] - device["used"]
        )

    attrs = {
        "NVMLError": FakeNVMLError,
        "nvmlInit": init,
        "nvmlShutdown": lambda: log.append("shutdown"),
        "nvmlDeviceGetCount": lambda: len(devices),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetMemoryInfo": memory,
        "nvmlDeviceGetName": lambda handle: devices[handle]["name"],
        "nvmlDeviceGetComputeRunningProcesses": processes,
    }
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


@pytest.fixture
def trainer() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that stands for an agent using the GPU."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def one_gpu(trainer_pid: int) -> list[dict[str, Any]]:
    """An 8 GiB GPU with 3 GiB used: 2 GiB by the trainer, 1 GiB by a process of no agent."""
    return [
        {
            "name": b"NVIDIA Fake 8GB",
            "total": 8 * GIB,
            "used": 3 * GIB,
            "processes": [(trainer_pid, 2 * GIB), (2_000_000_000, 1 * GIB)],
        }
    ]


def test_gpu_with_two_processes_is_mapped_to_the_agent(
    mesh: Mesh, trainer: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(one_gpu(trainer.pid), calls=calls))
    agents.register(mesh, "trainer", pid=trainer.pid, vram_gb=4.0)
    report = hardware.hw_report(mesh)
    gpu = report["gpu"]
    assert gpu["total_gb"] == 8.0
    assert gpu["used_gb"] == 3.0
    assert gpu["available_gb"] == 5.0
    assert gpu["limit_gb"] == 8.0  # default: the machine's capacity
    assert gpu["declared_gb"] == 4.0
    assert gpu["free_gb"] == 4.0
    assert gpu["agents_gb"] == 2.0
    [device] = gpu["devices"]
    assert device["name"] == "NVIDIA Fake 8GB"
    assert device["processes"] == [
        {"pid": trainer.pid, "used_gb": 2.0},
        {"pid": 2_000_000_000, "used_gb": 1.0},
    ]
    [row] = report["agents"]
    assert row["measured"]["vram_gb"] == 2.0
    assert row["declared"]["vram_gb"] == 4.0
    assert calls[0] == "init"
    assert calls[-1] == "shutdown"


def test_nvml_init_error_means_no_gpu_figures(
    mesh: Mesh, trainer: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_fails=True))
    agents.register(mesh, "trainer", pid=trainer.pid, ram_gb=1.0)
    assert hardware_probes.gpu_probe() is None
    report = hardware.hw_report(mesh)
    assert "gpu" not in report
    assert report["ram"]["total_gb"] > 0
    assert "vram_gb" not in report["agents"][0]["measured"]
    with pytest.raises(hardware.BudgetDenied) as denied:
        agents.register(mesh, "wants-gpu", vram_gb=1.0)
    assert denied.value.details == {"needed": {"vram_gb": 1.0}, "free": {"vram_gb": 0.0}}


def test_no_devices_missing_library_and_unsupported_process_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], calls=calls))
    assert hardware_probes.gpu_probe() is None
    assert calls == ["init", "shutdown"]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: nvidia-ml-py absent
    assert hardware_probes.gpu_probe() is None
    device = {
        "name": "Fake",
        "total": GIB,
        "used": 0,
        "processes": FakeNVMLError("Not Supported"),
    }
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([device]))
    probe = hardware_probes.gpu_probe()
    assert probe is not None
    assert probe["devices"][0]["processes"] == []


def test_vram_admission_is_capped_by_free_gpu_memory(
    mesh_dir: Path, trainer: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(one_gpu(trainer.pid)))
    mesh = Mesh.open(mesh_dir, Config(budgets=BudgetsConfig(vram_gb=6.0)))
    agents.register(mesh, "trainer", pid=trainer.pid, vram_gb=3.0)
    with pytest.raises(hardware.BudgetDenied) as denied:
        agents.register(mesh, "second", vram_gb=3.5)
    assert denied.value.details == {"needed": {"vram_gb": 3.5}, "free": {"vram_gb": 3.0}}
    assert "GPU memory" in denied.value.message
    # Without a limit of its own, the GPU's 5 GiB free (not 8 - 3 declared) is the cap.
    mesh = Mesh.open(mesh_dir, Config())
    agents.unregister(mesh, "trainer")
    with pytest.raises(hardware.BudgetDenied) as denied:
        agents.register(mesh, "second", vram_gb=6.0)
    assert denied.value.details["free"] == {"vram_gb": 5.0}
    # The trainer's own 2 GiB already count as used: it may declare 7 GiB with 5 GiB free.
    assert agents.register(mesh, "trainer", pid=trainer.pid, vram_gb=7.0)["vram_gb"] == 7.0


def test_vram_overrun_is_enforced(
    mesh: Mesh, trainer: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(one_gpu(trainer.pid)))
    agents.register(mesh, "trainer", pid=trainer.pid, vram_gb=1.0)
    [action] = hardware.enforce(mesh, "kill")
    assert action["action"] == "kill"
    assert action["over"] == [{"resource": "vram", "declared_gb": 1.0, "measured_gb": 2.0}]
    assert trainer.wait(timeout=10) is not None
