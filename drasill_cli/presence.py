"""Presence, the read side of agents: who is registered and in what state (active, idle, dead).

State is derived when read: dead when the agent's process or session is verifiably gone (or
prune recorded a death), otherwise idle or active by heartbeat age. A verifiably live process
or session keeps an agent from being declared dead by heartbeat age alone: a long task without
mesh calls is not death.

This module only reads (a future heartbeat reset aside), so every module that asks about agents
(locks, tasks, hardware, lifecycle, status, watcher) imports it and never `agents.py`, which
registers and unregisters (and so calls hardware and lifecycle): no import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from drasill_cli import clock, liveness
from drasill_cli.errors import NotFound
from drasill_cli.mesh import Mesh
from drasill_cli.models import AgentRecord
from drasill_cli.names import check_agent_name


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
            if agent.supervisor == "heimdall":
                socket_dir = self.mesh.config.heimdall_socket_dir()
                verdicts.append(liveness.heimdall_session_alive(socket_dir, agent.session))
            elif agent.supervisor == "tmux":
                alive = liveness.tmux_session_alive(agent.session, self.tmux_panes())
                if alive is not None:
                    verdicts.append(alive)
        if not verdicts:
            return None
        return all(verdicts)

    def last_seen(self, agent: AgentRecord) -> float:
        """The latest heartbeat (registering is one), else the registration time.

        A heartbeat from the future (a clock that stepped back) counts as now (the backend
        resets it), so it ages from here instead of keeping a silent agent alive until then.
        """
        beat = self.mesh.backend.presence.last_seen(agent.name)
        return clock.parse_iso(agent.registered_at) if beat is None else beat

    def seen(self, agent: AgentRecord, beat: float | None) -> float:
        """`last_seen` from a heartbeat looked up before (`Presence.last_seen`): for a decision
        under the agent's exclusion, which must not read the storage itself."""
        return clock.parse_iso(agent.registered_at) if beat is None else beat

    def state(
        self, agent: AgentRecord, now: float | None = None, *, seen: float | None = None
    ) -> str:
        """active, idle or dead, by the contract's lifecycle rules (`seen`: its last sign of
        life, when looked up already: see `seen`)."""
        if agent.dead_at is not None:
            return "dead"
        alive = self.process_or_session_alive(agent)
        if alive is False:
            return "dead"
        age = (now or clock.now()) - (self.last_seen(agent) if seen is None else seen)
        lifecycle = self.mesh.config.lifecycle
        if age >= lifecycle.dead_after and alive is None:
            return "dead"
        if age >= lifecycle.idle_after:
            return "idle"
        return "active"

    def view(self, agent: AgentRecord, now: float | None = None) -> dict[str, Any]:
        """The agent object of the contract: the record plus state, last_seen and unread."""
        data = agent.to_record()
        for bookkeeping in ("pid_started", "session_started", "uid"):
            data.pop(bookkeeping, None)
        data["state"] = self.state(agent, now)
        data["last_seen"] = clock.iso(self.last_seen(agent))
        data["unread"] = unread_count(self.mesh, agent.name)
        return data


def unread_count(mesh: Mesh, name: str) -> int:
    """Unread messages in the agent's inbox (mail belongs to messages.py)."""
    from drasill_cli import messages

    return messages.unread_count(mesh, name)


def load(mesh: Mesh, name: str) -> AgentRecord | None:
    """The agent's record, or None; a record that fails validation is quarantined."""
    return mesh.backend.presence.get(name)


def is_dead(mesh: Mesh, name: str, observer: Observer | None = None) -> bool:
    """Whether `name` is a registered agent that is dead (an unregistered name never is)."""
    record = load(mesh, name)
    return record is not None and (observer or Observer(mesh)).state(record) == "dead"


def records(mesh: Mesh) -> Iterator[AgentRecord]:
    """Every registered agent's record, sorted by name (invalid ones are quarantined, skipped)."""
    for name in mesh.backend.presence.names():
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
