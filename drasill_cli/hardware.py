"""Hardware budgets: measure RAM and GPU memory, admit declarations, enforce them.

Agents declare what they may use (`register --ram-gb/--vram-gb`). Admission keeps the sum of
live agents' declarations inside the global limits (config `budgets.ram_gb`/`vram_gb`, default
the machine's capacity, RAM minus `reserve_ram_gb`) and inside what the machine really has
available, so the mesh never promises memory the host does not hold. Enforcement compares what
each agent's processes really use (RSS of its process tree; GPU memory of those pids via NVML)
with its declaration and applies the policy: warn, pause (SIGSTOP) or kill.

Sizes are GiB (2**30 bytes), as `free -g` and nvidia-smi count them. A machine without a GPU, a
driver or a working NVML has no GPU figures at all: the `gpu` keys are absent, never an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drasill_cli import clock, liveness
from drasill_cli.config import BUDGET_POLICIES
from drasill_cli.errors import InvalidInput, MeshError, NegativeOutcome

if TYPE_CHECKING:
    import psutil

    from drasill_cli.mesh import Mesh
    from drasill_cli.models import AgentRecord

GIB = 1024**3
PAUSED_DIR = "budgets/paused"
WARNED_DIR = "budgets/warned"
BUDGETS_LOCK = "budgets"
ENFORCE_LOCK = "budgets-enforce"
WAIT_POLL_S = 0.25
RESOURCES = {"ram": "RAM", "vram": "GPU memory"}


class BudgetDenied(NegativeOutcome):
    """A declaration does not fit in what is free (exit 1), with needed and free amounts."""

    default_code = "budget-denied"


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
        if agent.session and agent.backend == "heimdall":
            return heimdall_child_pid(self.mesh.config.heimdall_socket_dir(), agent.session)
        if agent.session and agent.backend == "tmux":
            panes = self.observer.tmux_panes()
            return panes.pid(agent.session) if panes is not None else None
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


# ---- limits and admission ----------------------------------------------------------------------


def limit_gb(mesh: Mesh, resource: str, ram: dict[str, float], gpu: dict[str, Any] | None) -> float:
    """The configured limit, else the machine's capacity (RAM minus the configured reserve)."""
    budgets = mesh.config.budgets
    if resource == "ram":
        if budgets.ram_gb is not None:
            return budgets.ram_gb
        return max(0.0, ram["total_gb"] - budgets.reserve_ram_gb)
    if budgets.vram_gb is not None:
        return budgets.vram_gb
    return float(gpu["total_gb"]) if gpu is not None else 0.0


def _available_gb(resource: str, ram: dict[str, float], gpu: dict[str, Any] | None) -> float:
    if resource == "ram":
        return ram["available_gb"]
    return float(gpu["available_gb"]) if gpu is not None else 0.0


def _increases(record: AgentRecord, admitted: AgentRecord | None) -> dict[str, float]:
    """The declared amounts that need a check: new or above what was already admitted."""
    wanted = {}
    for resource in RESOURCES:
        amount: float | None = getattr(record, f"{resource}_gb")
        before: float | None = getattr(admitted, f"{resource}_gb", None)
        if amount and (before is None or amount > before):
            wanted[resource] = amount
    return wanted


def shortfall(mesh: Mesh, record: AgentRecord, wanted: dict[str, float]) -> BudgetDenied | None:
    """Why `record`'s declaration does not fit now, or None when it does.

    Free is the limit minus what the other live agents declared, capped by what the machine has
    available plus what the agent's own processes already hold (they are part of its
    declaration, not a competitor for it).
    """
    from drasill_cli import presence

    ram = ram_probe()
    gpu = gpu_probe() if "vram" in wanted else None
    meter = Meter(mesh, gpu)
    declared = dict.fromkeys(wanted, 0.0)
    for other in presence.records(mesh):
        if other.name == record.name or meter.observer.state(other) == "dead":
            continue
        for resource in wanted:
            declared[resource] += getattr(other, f"{resource}_gb") or 0.0
    own = meter.processes(record)
    own_use = {"ram": meter.ram_gb(own), "vram": meter.vram_gb(own) or 0.0}
    needed: dict[str, float] = {}
    free: dict[str, float] = {}
    reasons = []
    for resource, amount in wanted.items():
        limit = limit_gb(mesh, resource, ram, gpu)
        available = _available_gb(resource, ram, gpu) + own_use[resource]
        budget_free = round(max(0.0, min(limit - declared[resource], available)), 3)
        if amount > budget_free:
            needed[f"{resource}_gb"] = amount
            free[f"{resource}_gb"] = budget_free
            if resource == "vram" and gpu is None:
                reasons.append(
                    f"needs {amount:g} GiB of {RESOURCES[resource]} but no GPU was found on this "
                    "machine (no device, driver or NVML; see mesh hw): register without --vram-gb"
                )
                continue
            reasons.append(
                f"needs {amount:g} GiB of {RESOURCES[resource]} but {budget_free:g} GiB is free "
                f"(limit {limit:g} GiB, {declared[resource]:g} GiB declared by other live agents, "
                f"{available:g} GiB available on this machine)"
            )
    if not reasons:
        return None
    return BudgetDenied(
        f"agent {record.name!r} {'; and '.join(reasons)}; declare less, retry with --wait "
        "SECONDS, or wait for other agents to unregister",
        needed=needed,
        free=free,
    )


@contextlib.contextmanager
def admission(
    mesh: Mesh, record: AgentRecord, admitted: AgentRecord | None, wait: float | None = None
) -> Iterator[None]:
    """Hold the budgets lock while `record`'s declaration is checked and written in the block.

    Checking and writing under one lock makes concurrent registrations see each other's
    declarations, so together they never exceed the limit. `admitted` is the live record being
    refreshed: keeping or lowering its declaration needs no check. With `wait`, a declaration
    that does not fit is retried (lock released in between) until it fits or time is up.
    """
    wanted = _increases(record, admitted)
    if not wanted:
        yield
        return
    deadline = time.monotonic() + (wait or 0.0)
    while True:
        with mesh.store.lock(BUDGETS_LOCK):
            denied = shortfall(mesh, record, wanted)
            if denied is None:
                yield
                return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise denied
        time.sleep(min(WAIT_POLL_S, remaining))


# ---- report ----------------------------------------------------------------------------------


def budget(
    mesh: Mesh,
    resource: str,
    ram: dict[str, float],
    gpu: dict[str, Any] | None,
    usages: list[Usage],
) -> dict[str, float]:
    """The budget of `ram` or `vram`: limit, declared by live agents, free, and their use."""
    available = _available_gb(resource, ram, gpu)
    limit = limit_gb(mesh, resource, ram, gpu)
    live = [u for u in usages if u.state != "dead"]
    declared = round(sum(u.declared(resource) or 0.0 for u in live), 3)
    measured = round(sum(u.measured(resource) or 0.0 for u in live), 3)
    return {
        "limit_gb": limit,
        "declared_gb": declared,
        "free_gb": round(max(0.0, min(limit - declared, available)), 3),
        "agents_gb": measured,
    }


def hw_report(mesh: Mesh) -> dict[str, Any]:
    """Capacity, measured use and budgets: `ram`, `gpu` (only with a GPU), `agents`, `policy`."""
    ram = ram_probe()
    gpu = gpu_probe()
    usages = sample(mesh, gpu)
    report: dict[str, Any] = {"ram": {**ram, **budget(mesh, "ram", ram, gpu, usages)}}
    if gpu is not None:
        report["gpu"] = {**gpu, **budget(mesh, "vram", ram, gpu, usages)}
    paused = set(_names(mesh, PAUSED_DIR))
    rows = []
    for usage in usages:
        if usage.state == "dead":
            continue
        measured: dict[str, float | None] = {"ram_gb": usage.ram_gb}
        if gpu is not None:
            measured["vram_gb"] = usage.vram_gb
        rows.append(
            {
                "name": usage.agent.name,
                "state": usage.state,
                "pids": [p.pid for p in usage.procs],
                "declared": {"ram_gb": usage.agent.ram_gb, "vram_gb": usage.agent.vram_gb},
                "measured": measured,
                "over": usage.overruns(),
                "paused": usage.agent.name in paused,
            }
        )
    report["agents"] = rows
    report["policy"] = mesh.config.budgets.policy
    return report


# ---- enforcement -----------------------------------------------------------------------------


def _names(mesh: Mesh, rel_dir: str) -> list[str]:
    return [n.removesuffix(".json") for n in mesh.store.names(rel_dir)]


def _protected_pids() -> set[int]:
    """This process and its ancestors: stopping them would freeze `mesh watch` or its shell."""
    import psutil

    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _signal(procs: list[psutil.Process], signum: int) -> list[tuple[int, float]]:
    """Send `signum` to each process; returns (pid, start time) of those that got it."""
    import psutil

    protected = _protected_pids()
    reached = []
    for proc in procs:
        if proc.pid in protected:
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(signum)
            reached.append((proc.pid, proc.create_time()))
    return reached


def _resume(mesh: Mesh, name: str, reason: str) -> dict[str, Any]:
    """SIGCONT the processes a pause stopped (those that are still the same processes)."""
    import psutil

    paused = mesh.store.read(f"{PAUSED_DIR}/{name}.json") or {}
    resumed = []
    for pid, started in paused.get("pids", []):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            proc = psutil.Process(int(pid))
            if liveness.same_start(proc.create_time(), float(started)):
                proc.send_signal(signal.SIGCONT)
                resumed.append(int(pid))
    mesh.store.remove(f"{PAUSED_DIR}/{name}.json")
    mesh.record("budget-resume", "mesh", agent=name, pids=resumed, reason=reason)
    return {"agent": name, "action": "resume", "pids": resumed, "reason": reason}


def _describe(over: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{o['measured_gb']:g} GiB of {RESOURCES[o['resource']]} "
        f"(declared {o['declared_gb']:g} GiB)"
        for o in over
    )


def _warn(mesh: Mesh, usage: Usage, over: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Message the agent once per overrun: the same resources over the same declarations."""
    name = usage.agent.name
    key = {o["resource"]: o["declared_gb"] for o in over}
    warned = mesh.store.read(f"{WARNED_DIR}/{name}.json")
    if warned is not None and warned.get("over") == key:
        return None
    flags = " and ".join(f"--{o['resource']}-gb" for o in over)
    body = (
        f"mesh budget warning: your processes use {_describe(over)}. Reduce what you use, or "
        f"re-register with a larger {flags} (mesh register {name} {flags} ...)."
    )
    from drasill_cli import messages

    try:
        messages.send(mesh, name, body, sender="mesh")
        delivered = True
    except MeshError:
        delivered = False  # the audit event still records the overrun
    mesh.store.write(f"{WARNED_DIR}/{name}.json", {"over": key, "at": clock.iso()})
    mesh.record("budget-warn", "mesh", agent=name, over=over, delivered=delivered)
    return {"agent": name, "action": "warn", "over": over, "delivered": delivered}


def _pause(mesh: Mesh, usage: Usage, over: list[dict[str, Any]]) -> dict[str, Any]:
    """SIGSTOP the agent's tree and remember which processes, so a later pass resumes them."""
    name = usage.agent.name
    stopped = _signal(usage.procs, signal.SIGSTOP)
    mesh.store.write(
        f"{PAUSED_DIR}/{name}.json",
        {"agent": name, "pids": [list(s) for s in stopped], "over": over, "at": clock.iso()},
    )
    pids = [pid for pid, _ in stopped]
    mesh.record("budget-pause", "mesh", agent=name, over=over, pids=pids)
    return {"agent": name, "action": "pause", "over": over, "pids": pids}


def _kill(mesh: Mesh, usage: Usage, over: list[dict[str, Any]]) -> dict[str, Any]:
    """SIGTERM the tree (SIGCONT so a stopped process can act on it), SIGKILL after the grace."""
    import psutil

    name = usage.agent.name
    protected = _protected_pids()
    targets = [p for p in usage.procs if p.pid not in protected]
    _signal(targets, signal.SIGTERM)
    _signal(targets, signal.SIGCONT)
    _gone, alive = psutil.wait_procs(targets, timeout=mesh.config.budgets.kill_grace)
    _signal(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    mesh.store.remove(f"{PAUSED_DIR}/{name}.json")
    mesh.store.remove(f"{WARNED_DIR}/{name}.json")
    pids = [p.pid for p in targets]
    forced = [p.pid for p in alive]
    mesh.record("budget-kill", "mesh", agent=name, over=over, pids=pids, forced=forced)
    return {"agent": name, "action": "kill", "over": over, "pids": pids, "forced": forced}


def enforce(mesh: Mesh, policy: str | None = None) -> list[dict[str, Any]]:
    """One enforcement pass, as `mesh watch` runs on each hardware tick; returns what it did.

    Each live agent's measured use is compared with its declaration. Over: warn (once per
    overrun), pause (SIGSTOP) or kill, by `policy` (default: config `budgets.policy`). A paused
    agent is resumed once under again (e.g. after re-registering with a larger declaration),
    when the policy is no longer pause, or when it is unregistered or dead: the mesh never
    leaves a process stopped that it no longer governs.
    """
    policy = policy or mesh.config.budgets.policy
    if policy not in BUDGET_POLICIES:
        raise InvalidInput(
            f"budget policy must be one of {', '.join(BUDGET_POLICIES)}, got {policy!r}",
            code="invalid-policy",
        )
    actions: list[dict[str, Any]] = []
    with mesh.store.lock(ENFORCE_LOCK):
        usages = {u.agent.name: u for u in sample(mesh, gpu_probe())}
        for name in _names(mesh, PAUSED_DIR):
            usage = usages.get(name)
            if usage is None or usage.state == "dead" or not usage.procs:
                actions.append(_resume(mesh, name, "unregistered or dead"))
        for name, usage in usages.items():
            if usage.state == "dead" or not usage.procs:
                continue
            over = usage.overruns()
            paused = mesh.store.mtime(f"{PAUSED_DIR}/{name}.json") is not None
            if paused and (not over or policy != "pause"):
                reason = "back under its declaration" if not over else f"policy is {policy}"
                actions.append(_resume(mesh, name, reason))
                paused = False
            if not over:
                mesh.store.remove(f"{WARNED_DIR}/{name}.json")
                continue
            if policy == "warn":
                warned = _warn(mesh, usage, over)
                if warned is not None:
                    actions.append(warned)
            elif policy == "pause" and not paused:
                actions.append(_pause(mesh, usage, over))
            elif policy == "kill":
                actions.append(_kill(mesh, usage, over))
    return actions
