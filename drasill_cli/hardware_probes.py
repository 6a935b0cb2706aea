"""Hardware probes: what the machine has (RAM via psutil, GPU memory via NVML) and what each
agent's processes use (RSS of its process tree; GPU memory of those pids).

Sizes are GiB (2**30 bytes), as `free -g` and nvidia-smi count them. A machine without a GPU, a
driver or a working NVML has no GPU figures at all: the `gpu` keys are absent, never an error.
The budget rules that use these figures are in `hardware` (limits, admission, report) and
`hardware_enforcement` (warn, pause, kill).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drasill_cli import clock, liveness

if TYPE_CHECKING:
    import psutil

    from drasill_cli import presence
    from drasill_cli.mesh import Mesh
    from drasill_cli.models import AgentRecord

GIB = 1024**3
RESOURCES = {"ram": "RAM", "vram": "GPU memory"}


def _gib(amount: float) -> float:
    return round(amount / GIB, 3)


# ---- probes ----------------------------------------------------------------------------------


def ram_probe() -> dict[str, float]:
    """The machine's RAM: total, available to new work, and used (total minus available)."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "total_gb": _gib(memory.total),
        "available_gb": _gib(memory.available),
        "used_gb": _gib(memory.total - memory.available),
    }


def gpu_probe() -> dict[str, Any] | None:
    """GPU devices and their compute processes via NVML; None without a usable GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        devices = [_gpu_device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    if not devices:
        return None
    return {
        "devices": devices,
        "total_gb": round(sum(d["total_gb"] for d in devices), 3),
        "used_gb": round(sum(d["used_gb"] for d in devices), 3),
        "available_gb": round(sum(d["available_gb"] for d in devices), 3),
    }


def _gpu_device(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    try:
        running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        running = []  # per-process accounting is unsupported on some devices and drivers
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "total_gb": _gib(memory.total),
        "used_gb": _gib(memory.used),
        "available_gb": _gib(memory.free),
        "processes": [{"pid": int(p.pid), "used_gb": _gib(p.usedGpuMemory or 0)} for p in running],
    }


def heimdall_child_pid(socket_dir: Path, session: str) -> int | None:
    """The agent process heimdall supervises: line 2 of `<socket_dir>/<session>.pid`."""
    _supervisor, child = liveness.heimdall_pids(liveness.heimdall_files(socket_dir, session).pid)
    return child


def session_root(
    mesh: Mesh, session: str, supervisor: str | None, observer: presence.Observer
) -> int | None:
    """The process a session runs: heimdall's supervised child, or the tmux pane's process."""
    if supervisor == "heimdall":
        return heimdall_child_pid(mesh.config.heimdall_socket_dir(), session)
    if supervisor == "tmux":
        panes = observer.tmux_panes()
        return panes.pid(session) if panes is not None else None
    return None


class ProcessTable:
    """One pass over the process table: each process, its children, start time and RSS."""

    def __init__(self) -> None:
        import psutil

        self.procs: dict[int, psutil.Process] = {}
        self.started: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid", "create_time", "memory_info"]):
            info = proc.info
            self.procs[proc.pid] = proc
            self.started[proc.pid] = info["create_time"] or 0.0
            memory = info["memory_info"]
            self.rss[proc.pid] = memory.rss if memory is not None else 0
            if info["ppid"] is not None:
                self.children.setdefault(info["ppid"], []).append(proc.pid)

    def alive(self, pid: int, started: float | None) -> bool:
        """Whether `pid` exists and is the process that was registered (same start time)."""
        if pid not in self.started or started is None:
            return False
        return liveness.same_start(self.started[pid], started)

    def tree(self, roots: Iterable[int]) -> list[int]:
        """Each root that exists and all its descendants (started after it, as psutil counts)."""
        found: dict[int, None] = {}
        for root in roots:
            if root not in self.started:
                continue
            born = self.started[root]
            stack = [root]
            while stack:
                pid = stack.pop()
                if pid in found:
                    continue
                found[pid] = None
                stack.extend(c for c in self.children.get(pid, ()) if self.started[c] >= born)
        return list(found)


def process_tree(roots: list[int]) -> list[psutil.Process]:
    """The root processes and all their descendants that still exist."""
    table = ProcessTable()
    return [table.procs[pid] for pid in table.tree(roots)]


@dataclasses.dataclass
class Usage:
    """One agent's declaration next to what its processes use now (None: not measurable)."""

    agent: AgentRecord
    state: str
    procs: list[psutil.Process]
    ram_gb: float | None
    vram_gb: float | None

    def declared(self, resource: str) -> float | None:
        """The declared amount of `ram` or `vram`."""
        value: float | None = getattr(self.agent, f"{resource}_gb")
        return value

    def measured(self, resource: str) -> float | None:
        """The measured amount of `ram` or `vram`."""
        return self.ram_gb if resource == "ram" else self.vram_gb

    def overruns(self) -> list[dict[str, Any]]:
        """Each resource whose measured use is above the declaration."""
        found = []
        for resource in RESOURCES:
            declared, measured = self.declared(resource), self.measured(resource)
            if declared is not None and measured is not None and measured > declared:
                found.append(
                    {"resource": resource, "declared_gb": declared, "measured_gb": measured}
                )
        return found


class Meter:
    """One measuring pass over many agents, fast with hundreds of them.

    The process table is read once (on first need), tmux panes are listed once (shared with the
    observer's session checks) and GPU memory comes from one NVML sample, mapped by pid.
    """

    def __init__(self, mesh: Mesh, gpu: dict[str, Any] | None) -> None:
        from drasill_cli import presence

        self.mesh = mesh
        self.gpu = gpu
        self.observer = presence.Observer(mesh)
        self._table: ProcessTable | None = None
        self.gpu_by_pid: dict[int, float] = {}
        for device in (gpu or {}).get("devices", []):
            for proc in device["processes"]:
                pid = proc["pid"]
                self.gpu_by_pid[pid] = self.gpu_by_pid.get(pid, 0.0) + float(proc["used_gb"])

    @property
    def table(self) -> ProcessTable:
        """The process table, read on first use."""
        if self._table is None:
            self._table = ProcessTable()
        return self._table

    def root(self, agent: AgentRecord) -> int | None:
        """The process whose tree is the agent: its pid, else its session's child process.

        Only processes on this host are measurable, and a registered pid counts only while its
        start time matches, so a recycled pid is never measured (or signalled) as the agent.
        """
        if agent.host != liveness.hostname():
            return None
        if agent.pid is not None:
            return agent.pid if self.table.alive(agent.pid, agent.pid_started) else None
        if agent.session:
            return session_root(self.mesh, agent.session, agent.supervisor, self.observer)
        return None

    def processes(self, agent: AgentRecord) -> list[psutil.Process]:
        """The agent's process tree (root first); empty when there is nothing to measure."""
        root = self.root(agent)
        if root is None:
            return []
        return [self.table.procs[pid] for pid in self.table.tree([root])]

    def ram_gb(self, procs: list[psutil.Process]) -> float:
        """Resident memory of the processes together."""
        return _gib(sum(self.table.rss.get(p.pid, 0) for p in procs))

    def vram_gb(self, procs: list[psutil.Process]) -> float | None:
        """GPU memory NVML attributes to the processes over all devices; None without a GPU."""
        if self.gpu is None:
            return None
        return round(sum(self.gpu_by_pid.get(p.pid, 0.0) for p in procs), 3)

    def usage(self, agent: AgentRecord, state: str) -> Usage:
        """The agent's measured use (a dead agent, or one without processes, is not measured)."""
        procs = self.processes(agent) if state != "dead" else []
        if not procs:
            return Usage(agent, state, [], None, None)
        return Usage(agent, state, procs, self.ram_gb(procs), self.vram_gb(procs))


def sample(mesh: Mesh, gpu: dict[str, Any] | None) -> list[Usage]:
    """Every registered agent with its state and measured use, sorted by name."""
    from drasill_cli import presence

    meter = Meter(mesh, gpu)
    now = clock.now()
    return [meter.usage(a, meter.observer.state(a, now)) for a in presence.records(mesh)]
