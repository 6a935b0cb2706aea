"""Agents: register, unregister and heartbeat (the writers of presence).

An agent's record holds what it declared; its heartbeat is a separate time refreshed by any
command run as it, so a heartbeat never rewrites the record (`mesh.backend.presence` keeps
both). Reading agents and their derived state (active, idle, dead) is `drasill_cli.presence`,
re-exported here for callers of the agents API; modules that only read import that one, since
registering calls hardware (admission) and unregistering calls lifecycle.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from drasill_cli import clock, liveness
from drasill_cli.errors import Busy, InvalidInput, NegativeOutcome
from drasill_cli.mesh import Mesh
from drasill_cli.models import SUPERVISORS, AgentRecord
from drasill_cli.names import check_agent_name, has_control_chars
from drasill_cli.presence import (
    Observer,
    get,
    is_dead,
    list_agents,
    load,
    records,
    unread_count,
)
from drasill_cli.waiting import check_wait

# The read side, re-exported for callers of the agents API (`agents.get`, `agents.list_agents`).
__all__ = [
    "Observer",
    "get",
    "heartbeat",
    "is_dead",
    "list_agents",
    "load",
    "records",
    "register",
    "unread_count",
    "unregister",
]

MAX_FIELD_CHARS = 200
MAX_PID = 2**31 - 1
MAX_BUDGET_GB = 1_000_000  # a petabyte: anything above is a typo, and must stay valid JSON
# How many times a registration decides again when its agent changed between the budget check
# and the write (each try decides once; a change in between is another registration's).
_MAX_TRIES = 20


class _Changed(Exception):
    """The agent's record changed between the budget check and the write: decide again."""


def _clean_text(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_FIELD_CHARS or has_control_chars(value):
        raise InvalidInput(
            f"--{field} must be 1 to {MAX_FIELD_CHARS} printable characters, got {value!r}",
            code=f"invalid-{field}",
        )
    return value


def _holder_differs(existing: AgentRecord, pid: int | None, session: str | None) -> bool:
    pid_differs = pid is not None and existing.pid is not None and pid != existing.pid
    session_differs = (
        session is not None and existing.session is not None and session != existing.session
    )
    return pid_differs or session_differs


def _session_started(
    mesh: Mesh, session: str | None, supervisor: str | None, observer: Observer
) -> float | None:
    """The start time of the process the session runs now (None: no session, or none found)."""
    if session is None:
        return None
    from drasill_cli import hardware_probes  # only a session registration looks it up

    root = hardware_probes.session_root(mesh, session, supervisor, observer)
    return liveness.process_start_time(root) if root is not None else None


def register(
    mesh: Mesh,
    name: str,
    *,
    session: str | None = None,
    supervisor: str | None = None,
    pid: int | None = None,
    role: str | None = None,
    tool: str | None = None,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    replace: bool = False,
    cwd: str | None = None,
    wait: float | None = None,
) -> dict[str, Any]:
    """Register or refresh `name`; refuse a name held by a different live pid or session.

    A RAM/VRAM declaration must fit in what is free (`hardware.admission`), else BudgetDenied
    (exit 1); with `wait`, it waits up to that many seconds for room, holding no exclusion
    while it waits (commands as `name` go on meanwhile), and then decides once.
    """
    check_agent_name(name)
    session = _clean_text("session", session)
    role = _clean_text("role", role)
    tool = _clean_text("tool", tool)
    if supervisor is not None and supervisor not in SUPERVISORS:
        raise InvalidInput(
            f"--backend must be heimdall or tmux, got {supervisor!r}", code="invalid-backend"
        )
    if pid is not None and not 0 < pid <= MAX_PID:
        raise InvalidInput(
            f"--pid must be a process id from 1 to {MAX_PID}, got {pid}", code="invalid-pid"
        )
    for flag, amount in (("ram-gb", ram_gb), ("vram-gb", vram_gb)):
        if amount is not None and not 0 <= amount <= MAX_BUDGET_GB:
            raise InvalidInput(
                f"--{flag} must be a number of GiB from 0 to {MAX_BUDGET_GB}, got {amount}",
                code="invalid-budget",
            )
    if wait is not None:
        check_wait(wait)
    if session is not None and supervisor is None:
        supervisor = "heimdall"
    started = liveness.process_start_time(pid) if pid is not None else None
    observer = Observer(mesh)
    session_started = _session_started(mesh, session, supervisor, observer) if pid is None else None

    def build(
        existing: AgentRecord | None, beat: float | None
    ) -> tuple[AgentRecord, AgentRecord | None]:
        """The record to store over `existing` (whose heartbeat, looked up before, is `beat`),
        and the live record it refreshes (None when it makes a new one); NegativeOutcome when
        a different live holder has the name."""
        # A live holder being re-registered (not replaced); its record has no `dead_at`.
        alive = (
            existing is not None
            and not replace
            and observer.state(existing, seen=observer.seen(existing, beat)) != "dead"
        )
        if existing is not None and alive and _holder_differs(existing, pid, session):
            held_by = ", ".join(
                f"{label} {value}"
                for label, value in (("pid", existing.pid), ("session", existing.session))
                if value is not None
            )
            raise NegativeOutcome(
                f"agent name {name!r} is held by {held_by} on {existing.host} "
                f"(registered {existing.registered_at}); "
                "pick another name, or take it over with --replace",
                code="name-taken",
                holder={"pid": existing.pid, "session": existing.session, "host": existing.host},
            )
        refresh = existing is not None and existing.dead_at is None and not replace
        previous = existing.to_record() if refresh and existing is not None else {}
        declared = {
            "pid": pid,
            "session": session,
            "backend": supervisor,
            "role": role,
            "tool": tool,
            "ram_gb": ram_gb,
            "vram_gb": vram_gb,
        }
        fields = {
            key: previous.get(key) if value is None else value for key, value in declared.items()
        }
        record = AgentRecord.from_record(
            {
                **fields,
                "name": name,
                "pid_started": started if pid is not None else previous.get("pid_started"),
                "session_started": (
                    session_started if session is not None else previous.get("session_started")
                ),
                "uid": os.getuid(),
                "host": liveness.hostname(),
                "cwd": cwd or os.getcwd(),
                "registered_at": previous.get("registered_at") or clock.iso(),
            }
        )
        return record, existing if alive else None

    existing, record = _admit_and_store(mesh, name, build, wait)
    mesh.append_audit_event(
        "register",
        name,
        pid=record.pid,
        session=record.session,
        backend=record.supervisor,
        ram_gb=record.ram_gb,
        vram_gb=record.vram_gb,
        replaced=bool(existing and replace),
    )
    return observer.view(record)


Build = Callable[[AgentRecord | None, float | None], tuple[AgentRecord, AgentRecord | None]]


def _admit_and_store(
    mesh: Mesh, name: str, build: Build, wait: float | None
) -> tuple[AgentRecord | None, AgentRecord]:
    """Store the record `build` makes over the agent's (the one replaced, the one stored).

    Waiting for room holds nothing (`hardware.wait_for_room`); each try then decides once: the
    budgets exclusion (only when a declaration grows) checks the declaration, and inside it the
    agent's exclusion writes the record, so concurrent registrations see each other's
    declarations and together never exceed the limit. Lock order: budgets, then the agent.
    """
    from drasill_cli import hardware  # only registering needs the budget bookkeeping

    deadline = time.monotonic() + (wait or 0.0)
    for _ in range(_MAX_TRIES):
        seen = mesh.backend.presence.get(name)
        # Its heartbeat looked up before the exclusion: the decision only compares.
        beat = mesh.backend.presence.last_seen(name) if seen is not None else None
        record, admitted = build(seen, beat)
        wanted = hardware.increases(record, admitted)
        decided: list[tuple[AgentRecord | None, AgentRecord]] = []

        def decide(
            existing: AgentRecord | None,
            wanted: dict[str, float] = wanted,
            decided: list[tuple[AgentRecord | None, AgentRecord]] = decided,
            beat: float | None = beat,
        ) -> AgentRecord:
            stored, now_admitted = build(existing, beat)
            now_wanted = hardware.increases(stored, now_admitted)
            if any(wanted.get(resource) != amount for resource, amount in now_wanted.items()):
                raise _Changed  # the agent changed since the check: check again
            decided.append((existing, stored))
            return stored

        try:
            with hardware.admission(mesh, record, wanted):
                mesh.backend.presence.change(name, decide, beat=True)
        except hardware.BudgetDenied:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            from drasill_cli.keepalive import kept_alive

            with kept_alive(mesh, name):  # a registered agent waiting for room stays alive
                hardware.wait_for_room(mesh, record, wanted, remaining)
            continue
        except _Changed:
            continue
        return decided[-1]
    raise Busy(
        f"agent {name!r} kept changing while it was being registered; run the command again",
        code="agent-busy",
    )


def unregister(
    mesh: Mesh, name: str, actor: str | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Leave the mesh: locks released, tasks requeued, unread mail archived, record removed.

    `actor` None is the agent itself (the API's default). Another actor removing an agent that
    is still alive is refused (exit 1) unless `force`. The result is the agent object plus
    `archived`: how many unread messages were archived (`messages.archived`).
    """
    from drasill_cli import lifecycle

    observer = Observer(mesh)
    view = observer.view(get(mesh, name))
    if actor is not None and actor != name and not force and view["state"] != "dead":
        raise NegativeOutcome(
            f"{name} is still alive ({view['state']}, last seen {view['last_seen']}); "
            "unregistering it takes its locks and tasks away mid-work: ask it to run "
            f"`mesh unregister {name}` itself, or add --force",
            code="agent-alive",
            state=view["state"],
        )
    report = lifecycle.retire_agent(mesh, name, event="unregister", actor=actor or name)
    return {**view, "archived": report["archived_messages"].get(name, 0)}


def heartbeat(mesh: Mesh, name: str) -> dict[str, Any]:
    """Refresh the agent's heartbeat; NotFound when it is not registered."""
    agent = get(mesh, name)
    mesh.backend.presence.beat(name)
    return Observer(mesh).view(agent)
