"""Hardware budgets: the limits, admission of declarations, and the report (`mesh hw`).

Agents declare what they may use (`register --ram-gb/--vram-gb`). Admission keeps the sum of
live agents' declarations inside the global limits (config `budgets.ram_gb`/`vram_gb`, default
the machine's capacity, RAM minus `reserve_ram_gb`) and inside what the machine really has
available, so the mesh never promises memory the host does not hold. What the machine has and
what each agent uses come from `hardware_probes`; enforcing the declarations (warn, pause with
SIGSTOP, or kill) is `hardware_enforcement`, run by `mesh watch` through `enforce` here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.errors import NegativeOutcome
from drasill_cli.hardware_probes import RESOURCES, Meter, Usage, gpu_probe, ram_probe, sample
from drasill_cli.units import gib

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh
    from drasill_cli.models import AgentRecord

WAIT_POLL_S = 0.25


class BudgetDenied(NegativeOutcome):
    """A declaration does not fit in what is free (exit 1), with needed and free amounts."""

    default_code = "budget-denied"


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

    Free is the limit minus what the other live agents of the same host declared, capped by
    what the machine has available plus what the agent's own processes already hold (they are
    part of its declaration, not a competitor for it). Agents on other hosts of a shared mesh
    use other machines' memory: they never count here.
    """
    from drasill_cli import presence

    ram = ram_probe()
    gpu = gpu_probe() if "vram" in wanted else None
    meter = Meter(mesh, gpu)
    declared = dict.fromkeys(wanted, 0.0)
    for other in presence.records(mesh):
        if other.name == record.name or other.host != record.host:
            continue
        if meter.observer.state(other) == "dead":
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
                    f"needs {gib(amount)} GiB of {RESOURCES[resource]} but no GPU was found on "
                    "this machine (no device, driver or NVML; see mesh hw): register without "
                    "--vram-gb"
                )
                continue
            reasons.append(
                f"needs {gib(amount)} GiB of {RESOURCES[resource]} but {gib(budget_free)} GiB is "
                f"free (limit {gib(limit)} GiB, {gib(declared[resource])} GiB declared by other "
                f"live agents, {gib(available)} GiB available on this machine)"
            )
    if not reasons:
        return None
    return BudgetDenied(
        f"agent {record.name!r} {'; and '.join(reasons)}; declare less, retry with --wait "
        "SECONDS, or wait for other agents to unregister",
        needed=needed,
        free=free,
    )


def increases(record: AgentRecord, admitted: AgentRecord | None) -> dict[str, float]:
    """What registering `record` over the live `admitted` record (None: none) must have
    checked: each declared amount that is new or above what was already admitted."""
    return _increases(record, admitted)


@contextlib.contextmanager
def admission(mesh: Mesh, record: AgentRecord, wanted: dict[str, float]) -> Iterator[None]:
    """Hold the budgets exclusion while `record`'s declaration is checked once and written in
    the block; BudgetDenied (exit 1) at once when it does not fit.

    Checking and writing under one exclusion makes concurrent registrations see each other's
    declarations, so together they never exceed the limit. `wanted` (`increases`) is what needs
    the check: nothing wanted, nothing is held. This never waits for room: `wait_for_room`
    does, outside every exclusion.
    """
    if not wanted:
        yield
        return
    with mesh.backend.budgets.admitting():
        denied = shortfall(mesh, record, wanted)
        if denied is not None:
            raise denied
        yield


def wait_for_room(
    mesh: Mesh, record: AgentRecord, wanted: dict[str, float], seconds: float
) -> None:
    """Sleep, holding nothing, until `wanted` of `record` looks like it fits or `seconds` have
    passed (the caller then decides once, under `admission`)."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(WAIT_POLL_S, remaining))
        if shortfall(mesh, record, wanted) is None:
            return


# ---- report ----------------------------------------------------------------------------------


def budget(
    mesh: Mesh,
    resource: str,
    ram: dict[str, float],
    gpu: dict[str, Any] | None,
    usages: list[Usage],
) -> dict[str, float]:
    """The budget of `ram` or `vram` on this host: limit, declared by its live agents, free, and
    their use."""
    available = _available_gb(resource, ram, gpu)
    limit = limit_gb(mesh, resource, ram, gpu)
    here = liveness.hostname()
    live = [u for u in usages if u.state != "dead" and u.agent.host == here]
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
    paused = set(mesh.backend.budgets.paused())
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


def enforce(mesh: Mesh, policy: str | None = None) -> list[dict[str, Any]]:
    """One enforcement pass (`hardware_enforcement.enforce`), as `mesh watch` runs it."""
    from drasill_cli import hardware_enforcement

    return hardware_enforcement.enforce(mesh, policy)
