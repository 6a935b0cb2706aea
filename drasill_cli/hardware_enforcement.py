"""Budget enforcement: compare what each agent uses with what it declared, and act on it.

The policy (config `budgets.policy`) is warn (a message, once per overrun), pause (SIGSTOP the
agent's process tree, SIGCONT once it is under again) or kill (SIGTERM, then SIGKILL after the
grace). What must outlive one pass (who is paused, which processes, who was warned about what)
is kept in the backend's `BudgetBook` (`mesh.backend.budgets`).

Pause and kill act only on processes proven to be the agent's: on this host, the root process
started when the record says (`pid_started`, or `session_started` for a session), each process
owned by the uid that registered the agent (the record's `uid`, which the storage must vouch
for: on a directory mesh the record's file is that uid's own, see `models.Writer`; on a
PostgreSQL mesh it was written by a database role, members with the URL being trusted), and
never `mesh watch` itself or its ancestors. A resume sends SIGCONT only to what this watcher's
own pause stopped (the book proves the pause record is the watcher's, `BudgetBook.resume`).
A record that proves less (one planted in the mesh, one from an older version
without `uid`, one whose process was replaced) is reported (action `report`, once per
overrun), never signalled.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.config import BUDGET_POLICIES
from drasill_cli.errors import InvalidInput, MeshError
from drasill_cli.hardware_probes import RESOURCES, Usage, gpu_probe, sample
from drasill_cli.units import gib

if TYPE_CHECKING:
    import psutil

    from drasill_cli.mesh import Mesh


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


def _unproven(usage: Usage) -> str | None:  # noqa: PLR0911 -- one return per missing proof
    """Why the root of `usage.procs` cannot be proven to be the agent's; None when it is."""
    import psutil

    agent = usage.agent
    root = usage.procs[0]
    expected = agent.pid_started if agent.pid is not None else agent.session_started
    if agent.uid is None:
        return "its record names no registering uid (re-register it with mesh register)"
    writer = agent.writer
    if writer is None or (writer.uid is None and writer.role is None):
        return (
            f"its record (naming uid {agent.uid}) cannot be proven written by that uid "
            "(others may write into it; re-register it with mesh register)"
        )
    if writer.uid is not None and writer.uid != agent.uid:
        return f"its record names uid {agent.uid} but was written by uid {writer.uid}"
    if expected is None:
        return "its record holds no start time of its process (re-register it)"
    try:
        if not liveness.same_start(root.create_time(), expected):
            return f"process {root.pid} started at another time than the one registered"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"process {root.pid} cannot be inspected"
    return None


def _owned(usage: Usage) -> tuple[list[psutil.Process], list[int]]:
    """The agent's processes that its registering uid owns (real and effective uid), and the pids
    of the others (never signalled); the watcher and its ancestors are in neither."""
    import psutil

    protected = _protected_pids()
    owned, foreign = [], []
    for proc in usage.procs:
        if proc.pid in protected:
            continue
        try:
            uids = proc.uids()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            foreign.append(proc.pid)
            continue
        if uids.real == usage.agent.uid and uids.effective == usage.agent.uid:
            owned.append(proc)
        else:
            foreign.append(proc.pid)
    return owned, foreign


def _report(
    mesh: Mesh, usage: Usage, over: list[dict[str, Any]], reason: str, policy: str
) -> dict[str, Any] | None:
    """Say (once per overrun) that the agent is over but its processes are not provably its own."""
    name = usage.agent.name
    key = {f"report-{o['resource']}": o["declared_gb"] for o in over}
    if mesh.backend.budgets.warned(name) == key:
        return None
    mesh.backend.budgets.warn(name, key)
    mesh.append_audit_event(
        "budget-report", "mesh", agent=name, over=over, policy=policy, reason=reason
    )
    return {"agent": name, "action": "report", "over": over, "pids": [], "reason": reason}


def _resume(mesh: Mesh, name: str, reason: str) -> dict[str, Any]:
    """SIGCONT the processes a pause stopped (those that are still the same processes)."""
    import psutil

    resumed = []
    for pid, started in mesh.backend.budgets.resume(name):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(pid)
            if liveness.same_start(proc.create_time(), started):
                proc.send_signal(signal.SIGCONT)
                resumed.append(pid)
    mesh.append_audit_event("budget-resume", "mesh", agent=name, pids=resumed, reason=reason)
    return {"agent": name, "action": "resume", "pids": resumed, "reason": reason}


def _describe(over: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{gib(o['measured_gb'])} GiB of {RESOURCES[o['resource']]} "
        f"(declared {gib(o['declared_gb'])} GiB)"
        for o in over
    )


def _warn(mesh: Mesh, usage: Usage, over: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Message the agent once per overrun: the same resources over the same declarations."""
    name = usage.agent.name
    key = {o["resource"]: o["declared_gb"] for o in over}
    if mesh.backend.budgets.warned(name) == key:
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
    mesh.backend.budgets.warn(name, key)
    mesh.append_audit_event("budget-warn", "mesh", agent=name, over=over, delivered=delivered)
    return {"agent": name, "action": "warn", "over": over, "delivered": delivered}


def _pause(
    mesh: Mesh, usage: Usage, over: list[dict[str, Any]], owned: list[psutil.Process]
) -> dict[str, Any]:
    """SIGSTOP the agent's tree and remember which processes, so a later pass resumes them."""
    name = usage.agent.name
    stopped = _signal(owned, signal.SIGSTOP)
    mesh.backend.budgets.pause(name, stopped, over)
    pids = [pid for pid, _ in stopped]
    mesh.append_audit_event("budget-pause", "mesh", agent=name, over=over, pids=pids)
    return {"agent": name, "action": "pause", "over": over, "pids": pids}


def _kill(
    mesh: Mesh, usage: Usage, over: list[dict[str, Any]], targets: list[psutil.Process]
) -> dict[str, Any]:
    """SIGTERM the tree (SIGCONT so a stopped process can act on it), SIGKILL after the grace."""
    import psutil

    name = usage.agent.name
    _signal(targets, signal.SIGTERM)
    _signal(targets, signal.SIGCONT)
    _gone, alive = psutil.wait_procs(targets, timeout=mesh.config.budgets.kill_grace)
    _signal(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    mesh.backend.budgets.resume(name)  # a killed agent is neither paused nor warned any more
    mesh.backend.budgets.forget_warning(name)
    pids = [p.pid for p in targets]
    forced = [p.pid for p in alive]
    mesh.append_audit_event("budget-kill", "mesh", agent=name, over=over, pids=pids, forced=forced)
    return {"agent": name, "action": "kill", "over": over, "pids": pids, "forced": forced}


def _stop(
    mesh: Mesh, usage: Usage, over: list[dict[str, Any]], policy: str
) -> dict[str, Any] | None:
    """Pause or kill the agent when its processes are proven its own; else report (once)."""
    reason = _unproven(usage)
    if reason is None:
        owned, foreign = _owned(usage)
        if not foreign:
            return (_pause if policy == "pause" else _kill)(mesh, usage, over, owned)
        reason = (
            f"process(es) {', '.join(map(str, foreign))} are not owned by uid "
            f"{usage.agent.uid}, which registered it"
        )
    return _report(mesh, usage, over, reason, policy)


def enforce(mesh: Mesh, policy: str | None = None) -> list[dict[str, Any]]:
    """One enforcement pass, as `mesh watch` runs on each hardware tick; returns what it did.

    Each live agent's measured use is compared with its declaration. Over: warn (once per
    overrun), pause (SIGSTOP) or kill, by `policy` (default: config `budgets.policy`). Only
    the agents of this host are governed (on a shared mesh each host runs its own watcher). A
    paused agent is resumed once under again (e.g. after re-registering with a larger declaration),
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
    book = mesh.backend.budgets
    here = liveness.hostname()
    with book.enforcing():
        sampled = sample(mesh, gpu_probe())
        # Each host's watcher governs the agents of its own host (their processes are there).
        elsewhere = {u.agent.name for u in sampled if u.agent.host != here}
        usages = {u.agent.name: u for u in sampled if u.agent.host == here}
        # Only the pauses this watcher's user made: a record anyone else wrote neither resumes
        # a process nor shields an agent from being paused.
        paused_now = set(book.paused(own=True)) - elsewhere
        for name in sorted(paused_now):
            usage = usages.get(name)
            if usage is None or usage.state == "dead" or not usage.procs:
                actions.append(_resume(mesh, name, "unregistered or dead"))
                paused_now.discard(name)
        for name, usage in usages.items():
            if usage.state == "dead" or not usage.procs:
                continue
            over = usage.overruns()
            paused = name in paused_now
            if paused and (not over or policy != "pause"):
                reason = "back under its declaration" if not over else f"policy is {policy}"
                actions.append(_resume(mesh, name, reason))
                paused = False
            if not over:
                book.forget_warning(name)
                continue
            if policy == "warn":
                warned = _warn(mesh, usage, over)
                if warned is not None:
                    actions.append(warned)
                continue
            if policy == "kill" or not paused:
                done = _stop(mesh, usage, over, policy)
                if done is not None:
                    actions.append(done)
    return actions
