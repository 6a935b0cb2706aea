"""Agents: register, unregister, heartbeat, and their derived state (active, idle, dead).

An agent's record (`agents/NAME.json`) holds what it declared; its heartbeat is the mtime of
`heartbeats/NAME`, touched by any command run as it, so a heartbeat never rewrites the record.
State is derived when read: dead when its process or session is verifiably gone (or prune
recorded a death), otherwise idle or active by heartbeat age. A verifiably live process or
session keeps an agent from being declared dead by heartbeat age alone: a long task without
mesh calls is not death.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from drasill_cli import clock, liveness
from drasill_cli.errors import InvalidInput, NegativeOutcome, NotFound
from drasill_cli.mesh import Mesh, agent_record_path, heartbeat_path
from drasill_cli.models import BACKENDS, FUTURE_SLACK_S, AgentRecord, RecordError
from drasill_cli.names import check_agent_name, has_control_chars

MAX_FIELD_CHARS = 200
MAX_PID = 2**31 - 1
MAX_BUDGET_GB = 1_000_000  # a petabyte: anything above is a typo, and must stay valid JSON


@dataclasses.dataclass
class Observer:
    """Caches what is costly to look up once per command (tmux's pane list)."""

    mesh: Mesh
    _tmux: liveness.TmuxPanes | None = None
    _tmux_loaded: bool = False

    def tmux_panes(self) -> liveness.TmuxPanes | None:
        """tmux's live sessions and panes, listed once."""
        if not self._tmux_loaded:
            self._tmux = liveness.tmux_panes()
            self._tmux_loaded = True
        return self._tmux

    def process_or_session_alive(self, agent: AgentRecord) -> bool | None:
        """True/False when the pid or session can be checked, None when neither can."""
        verdicts: list[bool] = []
        if agent.pid is not None:
            alive = liveness.pid_alive(agent.pid, agent.pid_started, agent.host)
            if alive is not None:
                verdicts.append(alive)
        if agent.session and agent.host == liveness.hostname():
            if agent.backend == "heimdall":
                socket_dir = self.mesh.config.heimdall_socket_dir()
                verdicts.append(liveness.heimdall_session_alive(socket_dir, agent.session))
            elif agent.backend == "tmux":
                alive = liveness.tmux_session_alive(agent.session, self.tmux_panes())
                if alive is not None:
                    verdicts.append(alive)
        if not verdicts:
            return None
        return all(verdicts)

    def last_seen(self, agent: AgentRecord) -> float:
        """The latest heartbeat (registering is one), else the registration time.

        A heartbeat from the future (a clock that stepped back) counts as now and is reset to
        now, so it ages from here instead of keeping a silent agent alive until that time.
        """
        rel = heartbeat_path(agent.name)
        beat = self.mesh.store.mtime(rel)
        if beat is None:
            return clock.parse_iso(agent.registered_at)
        now = clock.now()
        if beat > now + FUTURE_SLACK_S:
            if not self.mesh.store.read_only:
                self.mesh.store.touch(rel)
            return now
        return beat

    def state(self, agent: AgentRecord, now: float | None = None) -> str:
        """active, idle or dead, by the contract's lifecycle rules."""
        if agent.dead_at is not None:
            return "dead"
        alive = self.process_or_session_alive(agent)
        if alive is False:
            return "dead"
        age = (now or clock.now()) - self.last_seen(agent)
        lifecycle = self.mesh.config.lifecycle
        if age >= lifecycle.dead_after and alive is None:
            return "dead"
        if age >= lifecycle.idle_after:
            return "idle"
        return "active"

    def view(self, agent: AgentRecord, now: float | None = None) -> dict[str, Any]:
        """The agent object of the contract: the record plus state, last_seen and unread."""
        data = agent.to_record()
        data.pop("pid_started", None)
        data["state"] = self.state(agent, now)
        data["last_seen"] = clock.iso(self.last_seen(agent))
        data["unread"] = unread_count(self.mesh, agent.name)
        return data


def unread_count(mesh: Mesh, name: str) -> int:
    """Unread messages in the agent's inbox (the maildir layout belongs to messages.py)."""
    from drasill_cli import messages

    return messages.unread_count(mesh, name)


def load(mesh: Mesh, name: str) -> AgentRecord | None:
    """The agent's record, or None; a record that fails validation is quarantined."""
    raw = mesh.store.read(agent_record_path(name))
    if raw is None:
        return None
    try:
        agent = AgentRecord.from_record(raw)
    except RecordError as exc:
        mesh.store.quarantine(agent_record_path(name), f"is not an agent record: it {exc.reason}")
        return None
    if agent.name != name:
        mesh.store.quarantine(agent_record_path(name), f"holds agent {agent.name!r}, not {name!r}")
        return None
    return agent


def is_dead(mesh: Mesh, name: str, observer: Observer | None = None) -> bool:
    """Whether `name` is a registered agent that is dead (an unregistered name never is)."""
    record = load(mesh, name)
    return record is not None and (observer or Observer(mesh)).state(record) == "dead"


def records(mesh: Mesh) -> Iterator[AgentRecord]:
    """Every registered agent's record, sorted by name (invalid ones are quarantined, skipped)."""
    for name in mesh.agent_names():
        agent = load(mesh, name)
        if agent is not None:
            yield agent


def get(mesh: Mesh, name: str) -> AgentRecord:
    """The agent's record, or NotFound (exit 3)."""
    check_agent_name(name)
    agent = load(mesh, name)
    if agent is None:
        raise NotFound(
            f"no agent named {name!r} is registered; see `mesh agents --all`",
            code="unknown-agent",
        )
    return agent


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


def register(
    mesh: Mesh,
    name: str,
    *,
    session: str | None = None,
    backend: str | None = None,
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
    (exit 1), after retrying for up to `wait` seconds when given.
    """
    check_agent_name(name)
    session = _clean_text("session", session)
    role = _clean_text("role", role)
    tool = _clean_text("tool", tool)
    if backend is not None and backend not in BACKENDS:
        raise InvalidInput(
            f"--backend must be heimdall or tmux, got {backend!r}", code="invalid-backend"
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
    if wait is not None and not wait >= 0:
        raise InvalidInput(f"--wait must be zero or more seconds, got {wait}", code="invalid-wait")
    if session is not None and backend is None:
        backend = "heimdall"
    started = liveness.process_start_time(pid) if pid is not None else None
    observer = Observer(mesh)
    with mesh.store.lock(f"agent-{name}"):
        existing = load(mesh, name)
        # A live holder being re-registered (not replaced); its record has no `dead_at`.
        alive = existing is not None and not replace and observer.state(existing) != "dead"
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
            "backend": backend,
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
                "host": liveness.hostname(),
                "cwd": cwd or os.getcwd(),
                "registered_at": previous.get("registered_at") or clock.iso(),
            }
        )
        admitted = existing if alive else None
        from drasill_cli import hardware  # only registering needs the budget bookkeeping

        with hardware.admission(mesh, record, admitted, wait):
            mesh.store.write(agent_record_path(name), record.to_record())
        mesh.store.touch(heartbeat_path(name))
    mesh.record(
        "register",
        name,
        pid=record.pid,
        session=record.session,
        backend=record.backend,
        ram_gb=record.ram_gb,
        vram_gb=record.vram_gb,
        replaced=bool(existing and replace),
    )
    return observer.view(record)


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
    mesh.store.touch(heartbeat_path(name))
    return Observer(mesh).view(agent)


def list_agents(mesh: Mesh, *, include_dead: bool = False) -> list[dict[str, Any]]:
    """Agent objects sorted by name; dead ones only with `include_dead`."""
    observer = Observer(mesh)
    now = clock.now()
    views = []
    for agent in records(mesh):
        view = observer.view(agent, now)
        if include_dead or view["state"] != "dead":
            views.append(view)
    return views
