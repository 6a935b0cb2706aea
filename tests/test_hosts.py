"""A shared mesh spans hosts: each host judges, admits and governs only what is its own.

These run on a directory mesh with agent records that say they belong to another host (as a
PostgreSQL mesh shared by two machines would hold them); tests/test_multihost.py runs real
hosts against a real database.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drasill_cli import agents, hardware, hardware_enforcement, lifecycle, liveness, presence
from drasill_cli.config import BudgetsConfig, Config, LifecycleConfig
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh
from tests.conftest import register

ELSEWHERE = "box-b"


def _move_to_other_host(mesh: Mesh, name: str, **changes: object) -> None:
    """Rewrite `name`'s record as registered from another host (a pid that means nothing here)."""
    mesh.backend.presence.change(
        name, lambda cur: cur.replace(host=ELSEWHERE, **changes) if cur else None, beat=True
    )


def test_admission_counts_only_the_agents_of_the_same_host(mesh_dir: Path) -> None:
    assert liveness.hostname() != ELSEWHERE
    mesh = Mesh.open(mesh_dir, Config(budgets=BudgetsConfig(ram_gb=0.5)))
    agents.register(mesh, "remote", pid=os.getpid(), ram_gb=0.4)
    _move_to_other_host(mesh, "remote", pid=999_999, pid_started=1.0)
    agents.register(mesh, "near", pid=os.getpid(), ram_gb=0.4)  # fits: remote is elsewhere
    with pytest.raises(NegativeOutcome, match="declared by other live agents"):
        agents.register(mesh, "second", pid=os.getpid(), ram_gb=0.4)  # near counts: over 0.5
    report = hardware.hw_report(mesh)
    assert report["ram"]["declared_gb"] == 0.4  # this host's agents only


def test_another_hosts_agent_is_judged_by_its_heartbeat_alone(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(lifecycle=LifecycleConfig(dead_after=600)))
    agents.register(mesh, "remote", pid=os.getpid())
    # A pid that does not exist here: on its own host it is the live agent.
    _move_to_other_host(mesh, "remote", pid=999_999, pid_started=1.0)
    observer = presence.Observer(mesh)
    assert observer.state(presence.get(mesh, "remote")) == "active"
    report = lifecycle.prune(mesh)
    assert presence.get(mesh, "remote").dead_at is None, report
    assert not presence.is_dead(mesh, "remote")


def test_enforcement_leaves_another_hosts_pause_alone(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(budgets=BudgetsConfig(policy="pause")))
    agents.register(mesh, "remote", pid=os.getpid(), ram_gb=0.1)
    _move_to_other_host(mesh, "remote", pid=999_999, pid_started=1.0)
    mesh.backend.budgets.pause("remote", [(999_999, 1.0)], [])
    actions = hardware_enforcement.enforce(mesh)
    assert all(action["agent"] != "remote" for action in actions), actions
    assert mesh.backend.budgets.paused() == ["remote"]  # its own host's watcher resumes it


def test_a_lock_on_an_absolute_path_binds_on_its_own_host_only(
    mesh_dir: Path, tmp_path: Path
) -> None:
    """Outside a work tree a lock is on the absolute path on that host: the same path on
    another machine is another file (contract, Locks)."""
    from drasill_cli import locks
    from drasill_cli.storage.locktable import LockChanges

    mesh = Mesh.open(mesh_dir, Config())
    register(mesh, "remote", "near", "other")
    target = tmp_path / "notes.md"
    target.write_text("x\n")
    locks.acquire(mesh, [str(target)], "remote")

    def elsewhere(table: list[dict[str, object]]) -> LockChanges[None]:
        return LockChanges(None, put=[{**lock, "host": ELSEWHERE} for lock in table])

    mesh.backend.locks.transact(elsewhere)
    locks.acquire(mesh, [str(target)], "near")  # not refused: remote's notes.md is on box-b
    with pytest.raises(NegativeOutcome, match="near holds a write lock"):
        locks.acquire(mesh, [str(target)], "other")  # near's lock binds here
    hosts = {lock["holder"]: lock["host"] for lock in locks.list_locks(mesh)}
    assert hosts == {"remote": ELSEWHERE, "near": liveness.hostname()}
