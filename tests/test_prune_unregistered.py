"""Prune frees what names no longer registered still hold: nothing claimed twice, nothing lost.

A task can stay claimed (or a lock held) by a name that is not registered: one claimed before
claiming needed a registered name (an old mesh), or one whose claim escaped its retirement's
cut (a host whose clock runs ahead). Prune requeues such tasks (attempts unchanged, as an
unregistered claimant's) and drops such locks, once each however many prunes race, and never
what a name registered again since its look took. The CLI tests run on both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner, register

pytestmark = pytest.mark.both_backends

# Longer than the margin prune leaves for the clocks of other hosts (lifecycle.CLOCK_MARGIN_S):
# what was taken this long ago counts as taken before prune's look.
PAST_MARGIN_S = 0.25


def _forget(mesh: Any, name: str) -> None:
    """Drop `name`'s record through the storage API, leaving what it holds: as an old mesh or
    a retirement that missed a claim leaves it."""
    assert mesh.backend.presence.remove(name)


def test_prune_requeues_and_frees_what_an_unregistered_name_holds(
    cli: MeshRunner, tmp_path: Path
) -> None:
    from drasill_cli import locks, tasks

    path = os.path.realpath(tmp_path / "f")
    with cli.open() as mesh:
        register(mesh, "lead", "gone")
        claimed = tasks.add_task(mesh, "claimed", actor="lead")["id"]
        working = tasks.add_task(mesh, "working", actor="lead")["id"]
        kept = tasks.add_task(mesh, "kept", actor="lead")["id"]
        tasks.claim(mesh, "gone", claimed)
        tasks.claim(mesh, "gone", working)
        tasks.start(mesh, working, "gone")
        tasks.claim(mesh, "lead", kept)
        locks.acquire(mesh, [path], "gone", ttl=3600)
        _forget(mesh, "gone")
    time.sleep(PAST_MARGIN_S)
    before = cli.snapshot()

    plan = cli.json("prune", "--dry-run")
    assert sorted(t["id"] for t in plan["tasks_requeued"]) == [claimed, working]
    assert [(lock["holder"], lock["path"]) for lock in plan["locks_released"]] == [("gone", path)]
    assert f"would requeue task {claimed} (claimed)" in cli.run("prune", "--dry-run").stdout
    assert cli.snapshot() == before, "a dry run changes nothing"

    report = cli.json("prune")
    assert sorted(t["id"] for t in report["tasks_requeued"]) == [claimed, working]
    assert report["tasks_abandoned"] == []
    assert [(lock["holder"], lock["path"]) for lock in report["locks_released"]] == [("gone", path)]
    for task_id in (claimed, working):
        shown = cli.json("task", "show", task_id)
        assert (shown["state"], shown["claimed_by"], shown["attempts"]) == ("queued", None, 0)
    shown = cli.json("task", "show", kept)
    assert (shown["state"], shown["claimed_by"]) == ("claimed", "lead")
    assert cli.json("locks") == []
    requeues = [e for e in cli.events() if e["event"] == "task-requeue"]
    assert sorted((e["task"], e["agent"], e["reason"]) for e in requeues) == [
        (claimed, "gone", "claimant unregistered"),
        (working, "gone", "claimant unregistered"),
    ]
    cleared = [e for e in cli.events() if e["event"] == "lock-cleared"]
    assert [(e["holder"], e["path"], e["reason"]) for e in cleared] == [
        ("gone", path, "holder-unregistered")
    ]
    assert cli.run("prune").stdout == "", "the next prune finds nothing"


def test_a_claim_that_escaped_its_retirement_is_requeued_by_prune(
    cli: MeshRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim stamped by a host whose clock runs ahead, just before its claimant unregisters,
    lies after the retirement's cut and stays claimed; the next prune requeues it."""
    from drasill_cli import agents, clock, tasks

    ahead = 0.3
    with cli.open() as mesh:
        register(mesh, "lead", "leaver")
        task_id = tasks.add_task(mesh, "t", actor="lead")["id"]
        real_now = clock.now
        monkeypatch.setattr(clock, "now", lambda: real_now() + ahead)
        tasks.claim(mesh, "leaver", task_id)
        monkeypatch.setattr(clock, "now", real_now)
        agents.unregister(mesh, "leaver")
    shown = cli.json("task", "show", task_id)
    assert (shown["state"], shown["claimed_by"]) == ("claimed", "leaver"), "escaped the cut"
    assert "leaver" not in [a["name"] for a in cli.json("agents", "--all")]

    time.sleep(ahead + PAST_MARGIN_S)
    report = cli.json("prune")
    assert [t["id"] for t in report["tasks_requeued"]] == [task_id]
    shown = cli.json("task", "show", task_id)
    assert (shown["state"], shown["claimed_by"], shown["attempts"]) == ("queued", None, 0)


def test_what_a_name_registered_again_after_prunes_look_takes_stays_its_own(
    cli: MeshRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prune looks the registered names up before it decides: a process that registers the
    name after that look keeps the task it claims, the orphan task it starts and the orphan
    lock it renews; what the name held before and nobody touched since is freed."""
    from drasill_cli import agents, lifecycle, locks, tasks

    old_path, renewed_path, new_path = (
        os.path.realpath(tmp_path / name) for name in ("old", "renewed", "new")
    )
    with cli.open() as mesh:
        register(mesh, "lead", "gone")
        left = tasks.add_task(mesh, "left", actor="lead")["id"]
        started = tasks.add_task(mesh, "started", actor="lead")["id"]
        fresh = tasks.add_task(mesh, "fresh", actor="lead")["id"]
        tasks.claim(mesh, "gone", left)
        tasks.claim(mesh, "gone", started)
        locks.acquire(mesh, [old_path, renewed_path], "gone", ttl=3600)
        _forget(mesh, "gone")
        time.sleep(PAST_MARGIN_S)
        look = lifecycle.look_up_registered

        def racing(on: Any) -> Any:
            seen = look(on)
            assert "gone" not in seen[0]
            agents.register(on, "gone", pid=os.getpid())  # a new process takes the name
            tasks.claim(on, "gone", fresh)
            tasks.start(on, started, "gone")
            locks.acquire(on, [renewed_path, new_path], "gone", ttl=3600)
            return seen

        monkeypatch.setattr(lifecycle, "look_up_registered", racing)
        report = lifecycle.prune(mesh)
    monkeypatch.undo()
    assert [t["id"] for t in report["tasks_requeued"]] == [left]
    assert [lock["path"] for lock in report["locks_released"]] == [old_path]
    states = {t["id"]: (t["state"], t["claimed_by"]) for t in cli.json("task", "list")}
    assert states == {
        left: ("queued", None),
        started: ("working", "gone"),
        fresh: ("claimed", "gone"),
    }
    held = sorted((lock["holder"], lock["path"]) for lock in cli.json("locks"))
    assert held == [("gone", new_path), ("gone", renewed_path)]
    report = cli.json("prune")
    assert report["tasks_requeued"] == report["locks_released"] == [], "gone is registered now"


def test_concurrent_prunes_requeue_each_orphan_once(cli: MeshRunner, tmp_path: Path) -> None:
    """Prunes racing in separate processes: each task of a name no longer registered is
    requeued exactly once and each of its locks freed once; a registered claimant keeps its."""
    from drasill_cli import locks, tasks

    orphans: list[str] = []
    paths: list[str] = []
    with cli.open() as mesh:
        register(mesh, "lead", *(f"gone{i}" for i in range(3)))
        kept = tasks.add_task(mesh, "kept", actor="lead")["id"]
        tasks.claim(mesh, "lead", kept)
        for i in range(3):
            for j in range(2):
                task_id = tasks.add_task(mesh, f"t{i}{j}", actor="lead")["id"]
                tasks.claim(mesh, f"gone{i}", task_id)
                orphans.append(task_id)
            paths.append(os.path.realpath(tmp_path / f"f{i}"))
            locks.acquire(mesh, [paths[-1]], f"gone{i}", ttl=3600)
            _forget(mesh, f"gone{i}")
    time.sleep(PAST_MARGIN_S)
    prunes = [
        subprocess.Popen(
            cli.argv("prune", "--json"),
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reports = []
    for proc in prunes:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    requeued = [t["id"] for r in reports for t in r["tasks_requeued"]]
    assert sorted(requeued) == sorted(orphans), "each orphan task requeued exactly once"
    released = [lock["path"] for r in reports for lock in r["locks_released"]]
    assert sorted(released) == sorted(paths), "each orphan lock freed exactly once"
    events = cli.events()
    assert sorted(e["task"] for e in events if e["event"] == "task-requeue") == sorted(orphans)
    assert sorted(e["path"] for e in events if e["event"] == "lock-cleared") == sorted(paths)
    listed = {t["id"]: t for t in cli.json("task", "list")}
    assert all(listed[t]["state"] == "queued" and listed[t]["attempts"] == 0 for t in orphans)
    assert (listed[kept]["state"], listed[kept]["claimed_by"]) == ("claimed", "lead")


def test_a_claim_stamped_in_the_future_ages_from_the_first_prune(cli: MeshRunner) -> None:
    """A claim stamped by a clock that has since stepped back reads as made now, at every look:
    prune stores it as now, so it ages from there and a later prune requeues it."""
    from drasill_cli import clock, tasks

    with cli.open() as mesh:
        register(mesh, "lead", "gone")
        task = tasks.add_task(mesh, "t", actor="lead")
        claimed = tasks.claim(mesh, "gone", task["id"])
        _forget(mesh, "gone")
        future = clock.iso(time.time() + 3600)
        raw = {**claimed, "claimed_at": future, "updated_at": future}
        cli.harness.plant_task_record(mesh.backend, task["id"], raw)
    assert cli.json("prune", "--dry-run")["tasks_requeued"] == []
    assert cli.json("prune")["tasks_requeued"] == []
    time.sleep(PAST_MARGIN_S)
    assert [t["id"] for t in cli.json("prune")["tasks_requeued"]] == [task["id"]]
    shown = cli.json("task", "show", task["id"])
    assert (shown["state"], shown["claimed_by"], shown["attempts"]) == ("queued", None, 0)
