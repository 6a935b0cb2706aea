"""The status snapshot: agents, tasks, locks, budgets and recent traffic in one object.

`mesh status` is what people judge the mesh by, so it must stay fast with hundreds of agents:
- agents are measured by one `hardware_probes.Meter` pass: every process is read once (one
  `psutil.process_iter` pass builds the whole process forest), instead of one /proc scan per
  agent, and tmux panes are listed with one `tmux list-panes -a` call, never one per agent;
- the audit log is read from its end only, never parsed whole (`AuditLog.latest`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import audit, clock
from drasill_cli.mesh import Mesh

if TYPE_CHECKING:
    from drasill_cli import hardware_probes

RECENT_EVENTS = 20
WATCH_REFRESH_S = 5.0
AGENT_STATE_ORDER = {"active": 0, "idle": 1, "dead": 2}


def _agents(
    mesh: Mesh, gpu: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], list[hardware_probes.Usage]]:
    """Every registered agent (dead ones too: a person wants to see them), live ones first,
    with each one's measured use (one `hardware_probes.Meter` pass for all of them)."""
    from drasill_cli import agents, hardware_probes

    meter = hardware_probes.Meter(mesh, gpu)
    now = clock.now()
    found, usages = [], []
    for record in agents.records(mesh):
        view = meter.observer.view(record, now)
        usage = meter.usage(record, view["state"])
        view["declared"] = {"ram_gb": record.ram_gb, "vram_gb": record.vram_gb}
        view["measured"] = {"ram_gb": usage.ram_gb, "vram_gb": usage.vram_gb}
        found.append(view)
        usages.append(usage)
    found.sort(key=lambda a: (AGENT_STATE_ORDER.get(a["state"], 3), a["name"]))
    return found, usages


def _budgets(
    mesh: Mesh,
    ram: dict[str, float],
    gpu: dict[str, Any] | None,
    usages: list[hardware_probes.Usage],
) -> dict[str, Any]:
    from drasill_cli import hardware

    report: dict[str, Any] = {}
    for key, resource, machine in (("ram", "ram", ram), ("gpu", "vram", gpu)):
        if machine is not None:
            report[key] = {
                "total_gb": machine["total_gb"],
                "used_gb": machine["used_gb"],
                "available_gb": machine["available_gb"],
                **hardware.budget(mesh, resource, ram, gpu, usages),
            }
    report["policy"] = mesh.config.budgets.policy
    return report


def recent_events(mesh: Mesh, limit: int = RECENT_EVENTS) -> list[dict[str, Any]]:
    """The latest audit events, newest first (the log is read from its end only)."""
    return audit.latest(mesh, limit)


def _count(items: Iterable[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(Counter(item[key] for item in items))


def snapshot(mesh: Mesh) -> dict[str, Any]:
    """Everything `mesh status` shows: agents, tasks, locks, budgets, recent (plus counts)."""
    from drasill_cli import hardware_probes, locks, tasks

    ram = hardware_probes.ram_probe()
    gpu = hardware_probes.gpu_probe()
    agents, usages = _agents(mesh, gpu)
    task_list = tasks.list_tasks(mesh)
    lock_list = locks.list_locks(mesh)
    return {
        "mesh_dir": mesh.location,
        "spans_hosts": mesh.spans_hosts,
        "generated_at": clock.iso(),
        "agents": agents,
        "tasks": task_list,
        "locks": lock_list,
        "budgets": _budgets(mesh, ram, gpu, usages),
        "recent": recent_events(mesh),
        "counts": {
            "agents": _count(agents, "state"),
            "tasks": _count(task_list, "state"),
            "locks": len(lock_list),
        },
    }


MOVING_AGENT_KEYS = frozenset({"last_seen", "measured"})


def change_key(snap: dict[str, Any]) -> Any:
    """What a change in the mesh alters in a snapshot: not its time stamp, the heartbeats or
    the measured memory, which move by themselves (for redrawing only on real changes)."""
    agents = [
        {k: v for k, v in agent.items() if k not in MOVING_AGENT_KEYS} for agent in snap["agents"]
    ]
    return (agents, snap["tasks"], snap["locks"], snap["recent"])


def watch(
    mesh: Mesh, refresh_s: float = WATCH_REFRESH_S, stop: threading.Event | None = None
) -> Iterator[dict[str, Any]]:
    """A snapshot now, then one after every batch of changes in the mesh, until `stop` is set
    (never, without one).

    Woken by the backend's change events (batched), not a polling loop; a quiet mesh is still
    redrawn every `refresh_s` seconds so ages such as "last seen" stay true. Ctrl-C ends it with
    KeyboardInterrupt.
    """
    from drasill_cli.storage.changes import MESH, SIGNALLED, STOPPED
    from drasill_cli.waiting import enduring

    def look() -> dict[str, Any]:  # across a restart of the store's server
        return enduring(lambda: snapshot(mesh), mesh.config.store.reconnect_timeout, stop)

    with mesh.backend.changes.watch(MESH, tolerant=True) as changes:
        yield look()
        while True:
            seen = changes.next(refresh_s, stop)
            if seen == STOPPED or (stop is not None and stop.is_set()):
                return
            if seen == SIGNALLED:
                raise KeyboardInterrupt
            yield look()
