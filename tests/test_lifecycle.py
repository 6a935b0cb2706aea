"""Lifecycle and prune: death, release, requeue, archive, removal, dry runs (issue 6).

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _dir_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _populate_dying_agent(cli: MeshRunner, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    worker = _sleeper()
    cli.json("register", "worker", "--pid", str(worker.pid), "--ram-gb", "0")
    cli.json("register", "lead")
    task = cli.json("task", "add", "build it", "--as", "lead")
    cli.json("claim", task["id"], "--as", "worker")
    target = tmp_path / "src.py"
    target.write_text("x = 1\n")
    cli.json("lock", str(target), "--as", "worker", "--ttl", "3600")
    cli.json("send", "worker", "please build it", "--as", "lead")
    cli.json("send", "worker", "and test it", "--as", "lead", "--priority", "urgent")
    return worker, task["id"]


def test_dead_pid_is_marked_dead_released_requeued_then_removed_and_archived(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.config("[lifecycle]\nremove_after = 2\n")
    worker, task_id = _populate_dying_agent(cli, tmp_path)
    worker.kill()
    worker.wait()

    report = cli.json("prune")
    assert report["marked_dead"] == ["worker"]
    assert [t["id"] for t in report["tasks_requeued"]] == [task_id]
    assert [lock["holder"] for lock in report["locks_released"]] == ["worker"]
    assert report["removed"] == []
    task = cli.json("task", "show", task_id)
    assert task["state"] == "queued"
    assert task["attempts"] == 1
    assert task["claimed_by"] is None
    assert cli.json("locks") == []
    dead = [a for a in cli.json("agents", "--all") if a["name"] == "worker"]
    assert dead[0]["state"] == "dead"
    assert dead[0]["unread"] == 2, "a dead agent's mail is kept until it is removed"

    time.sleep(2.2)
    report = cli.json("prune")
    assert report["removed"] == ["worker"]
    assert report["archived_messages"] == {"worker": 2}
    assert "worker" not in [a["name"] for a in cli.json("agents", "--all")]
    archived = cli.json("history", "worker", "--archived")
    assert sorted(m["body"] for m in archived) == ["and test it", "please build it"]
    if cli.kind == "directory":  # kept as files in the mesh's archive
        files = list((cli.mesh_dir / "archive").rglob("*.json"))
        bodies = sorted(json.loads(p.read_text())["body"] for p in files)
        assert bodies == ["and test it", "please build it"]
    assert cli.run("prune").stdout == "", "prune is quiet when nothing changes"


def test_idle_and_dead_by_heartbeat_age(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nidle_after = 60\ndead_after = 120\n")
    cli.json("register", "quiet")
    cli.set_heartbeat("quiet", time.time() - 90)
    assert cli.json("agents")[0]["state"] == "idle"
    assert cli.json("prune")["marked_dead"] == []
    cli.set_heartbeat("quiet", time.time() - 500)
    assert cli.json("prune")["marked_dead"] == ["quiet"]
    assert cli.json("agents") == []


def test_dry_run_changes_nothing(cli: MeshRunner, tmp_path: Path) -> None:
    cli.config("[lifecycle]\nremove_after = 0\nstale_tmp_after = 0\n")
    worker, task_id = _populate_dying_agent(cli, tmp_path)
    worker.kill()
    worker.wait()
    directory = cli.kind == "directory"
    temp_files = ["staging/.tmp-999-0000dead-x.json"] if directory else []
    if directory:  # a write cut short, and a damaged record (a database has neither)
        (cli.mesh_dir / "staging" / ".tmp-999-0000dead-x.json").write_text("{half")
        (cli.mesh_dir / "agents" / "garbage.json").write_text("{not json")
        before_listing = _dir_listing(cli.mesh_dir)
        stat_before = {p: p.stat().st_mtime_ns for p in cli.mesh_dir.rglob("*")}
    before = cli.snapshot()

    plan = cli.json("prune", "--dry-run")
    assert plan["dry_run"] is True
    assert plan["marked_dead"] == ["worker"]
    assert plan["removed"] == ["worker"]
    assert [t["id"] for t in plan["tasks_requeued"]] == [task_id]
    assert len(plan["locks_released"]) == 1
    assert plan["archived_messages"] == {"worker": 2}
    assert plan["temp_files_removed"] == temp_files
    human = cli.run("prune", "--dry-run")
    assert "would mark worker dead" in human.stdout

    assert cli.snapshot() == before
    if directory:
        assert _dir_listing(cli.mesh_dir) == before_listing
        assert {p: p.stat().st_mtime_ns for p in cli.mesh_dir.rglob("*")} == stat_before

    report = cli.json("prune")
    assert report["removed"] == ["worker"]
    assert report["temp_files_removed"] == temp_files


GHOSTS = 4  # agents that die before the prunes
ROUNDS = 15  # each churning worker's sends, claims and locks
CHURN = """
import sys, os
from drasill_cli.mesh import Mesh
from drasill_cli import messages, tasks, locks
mesh = Mesh.open()  # the runner's mesh, from its environment (a directory or a URL)
me = sys.argv[2]
sent = 0
for i in range(int(sys.argv[1])):
    messages.send(mesh, "sink", f"{me} {i}", sender=me)
    sent += 1
    try:
        tasks.claim_next(mesh, me)
    except Exception:
        pass
    try:
        locks.acquire(mesh, [os.path.join(sys.argv[3], f"f{i % 5}")], me, ttl=60)
        locks.release(mesh, [os.path.join(sys.argv[3], f"f{i % 5}")], me)
    except Exception:
        pass
print(sent)
"""


def test_concurrent_prunes_during_activity(cli: MeshRunner, tmp_path: Path) -> None:
    """Prunes racing each other and three agents at work: each death is recorded, each dead
    holder's task requeued and lock freed exactly once, and no live agent's work is lost (on
    a database mesh too: every exclusion only decides, so none waits on another's work)."""
    from drasill_cli import agents, locks, tasks

    ghosts = [_sleeper() for _ in range(GHOSTS)]
    with cli.open() as mesh:  # the setup in-process: only the races need processes
        agents.register(mesh, "sink")
        for i, ghost in enumerate(ghosts):
            agents.register(mesh, f"ghost{i}", pid=ghost.pid)
            task = tasks.add_task(mesh, f"ghost task {i}")
            tasks.claim(mesh, f"ghost{i}", task["id"])
            locks.acquire(mesh, [str(tmp_path / f"g{i}")], f"ghost{i}", ttl=3600)
        for i in range(6):
            tasks.add_task(mesh, f"work {i}")
        for i in range(3):
            agents.register(mesh, f"busy{i}")
    for ghost in ghosts:
        ghost.kill()
        ghost.wait()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHURN, str(ROUNDS), f"busy{i}", str(tmp_path)],
            env=cli.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
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
        assert err == ""
        reports.append(json.loads(out))
    sent = sum(int(w.communicate(timeout=120)[0]) for w in workers)
    marked = sorted(n for r in reports for n in r["marked_dead"])
    assert marked == [f"ghost{i}" for i in range(GHOSTS)], "each death is recorded exactly once"
    requeued = [t["id"] for r in reports for t in r["tasks_requeued"]]
    assert len(requeued) == len(set(requeued)) == GHOSTS
    released = [lock["path"] for r in reports for lock in r["locks_released"]]
    assert sorted(released) == sorted(os.path.realpath(tmp_path / f"g{i}") for i in range(GHOSTS))
    final = cli.json("prune")
    assert final["marked_dead"] == final["tasks_requeued"] == final["locks_released"] == []
    inbox = cli.json("inbox", "sink", "--list")
    assert len(inbox) == sent == 3 * ROUNDS
    listed = cli.json("task", "list")
    ghost_tasks = [t for t in listed if t["title"].startswith("ghost task")]
    assert all(t["attempts"] == 1 for t in ghost_tasks)
    assert all(t["claimed_by"] is None or t["claimed_by"].startswith("busy") for t in listed)
    held = cli.json("locks")
    assert all(not lock["holder"].startswith("ghost") for lock in held)


@pytest.mark.directory_only("plants the directory mesh's temporary files")
def test_stale_temp_files_are_cleared(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nstale_tmp_after = 60\n")
    cli.json("register", "alpha")
    old = cli.mesh_dir / "staging" / ".tmp-1-000000aa-old.json"
    fresh = cli.mesh_dir / "staging" / ".tmp-1-000000bb-fresh.json"
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    report = cli.json("prune")
    assert report["temp_files_removed"] == ["staging/.tmp-1-000000aa-old.json"]
    assert fresh.exists()
    assert not old.exists()


def test_unregister_releases_and_archives(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "lead")
    cli.json("register", "leaver")
    task = cli.json("task", "add", "t")
    cli.json("claim", task["id"], "--as", "leaver")
    cli.json("lock", str(tmp_path / "f"), "--as", "leaver")
    cli.json("send", "leaver", "bye", "--as", "lead")
    cli.json("unregister", "leaver", "--as", "leaver")
    assert cli.json("task", "show", task["id"])["state"] == "queued"
    assert cli.json("locks") == []
    assert [m["body"] for m in cli.json("history", "leaver", "--archived")] == ["bye"]
    if cli.kind == "directory":
        archived = list((cli.mesh_dir / "archive").rglob("*.json"))
        assert len(archived) == 1


def test_a_retire_stopped_after_its_commit_is_completed_by_the_next(
    cli: MeshRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retiring frees, requeues and archives after its exclusion's commit: a process stopped
    in between leaves a dead agent that still holds them, and the next unregister completes."""
    from drasill_cli import agents, lifecycle, locks, messages, tasks

    path = os.path.realpath(tmp_path / "f")
    with cli.open() as mesh:
        agents.register(mesh, "lead")
        agents.register(mesh, "leaver")
        task = tasks.add_task(mesh, "t")
        tasks.claim(mesh, "leaver", task["id"])
        locks.acquire(mesh, [path], "leaver", ttl=3600)
        messages.send(mesh, "leaver", "bye", sender="lead")

        def stopped(*_args: object, **_kwargs: object) -> None:
            raise KeyboardInterrupt  # the process ends right after the mark's commit

        monkeypatch.setattr(lifecycle, "release_agent", stopped)
        with pytest.raises(KeyboardInterrupt):
            agents.unregister(mesh, "leaver")
    monkeypatch.undo()
    leaver = [a for a in cli.json("agents", "--all") if a["name"] == "leaver"]
    assert [a["state"] for a in leaver] == ["dead"]
    assert [lock["holder"] for lock in cli.json("locks")] == ["leaver"]
    assert cli.json("task", "show", task["id"])["claimed_by"] == "leaver"

    cli.json("unregister", "leaver", "--as", "lead")
    assert "leaver" not in [a["name"] for a in cli.json("agents", "--all")]
    shown = cli.json("task", "show", task["id"])
    assert (shown["state"], shown["claimed_by"]) == ("queued", None)
    assert cli.json("locks") == []
    assert [m["body"] for m in cli.json("history", "leaver", "--archived")] == ["bye"]
    assert [e["agent"] for e in cli.events() if e["event"] == "unregister"] == ["leaver"]


def test_a_name_registered_again_while_it_is_retired_keeps_what_it_took(
    cli: MeshRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that registers the name between the retirement's mark and its releases keeps
    the lock and task it takes then (taken after the cut), and its record is not removed."""
    from drasill_cli import agents, lifecycle, locks, tasks

    old_path, new_path = (os.path.realpath(tmp_path / name) for name in ("old", "new"))
    with cli.open() as mesh:
        agents.register(mesh, "leaver")
        old = tasks.add_task(mesh, "old")
        tasks.claim(mesh, "leaver", old["id"])
        locks.acquire(mesh, [old_path], "leaver", ttl=3600)
        new = tasks.add_task(mesh, "new")
        release = lifecycle.release_agent

        def racing(on: Any, name: str, report: Any, **kwargs: Any) -> None:
            agents.register(on, name)  # a new process takes the dead name meanwhile
            tasks.claim(on, name, new["id"])
            locks.acquire(on, [new_path], name, ttl=3600)
            release(on, name, report, **kwargs)

        monkeypatch.setattr(lifecycle, "release_agent", racing)
        agents.unregister(mesh, "leaver")
    monkeypatch.undo()
    leaver = [a for a in cli.json("agents", "--all") if a["name"] == "leaver"]
    assert [a["state"] for a in leaver] == ["active"]
    assert [(lock["holder"], lock["path"]) for lock in cli.json("locks")] == [("leaver", new_path)]
    assert cli.json("task", "show", old["id"])["state"] == "queued"
    shown = cli.json("task", "show", new["id"])
    assert (shown["state"], shown["claimed_by"]) == ("claimed", "leaver")


def test_unregister_requeues_without_counting_an_attempt(cli: MeshRunner) -> None:
    cli.json("register", "a")
    task = cli.json("task", "add", "t")
    cli.json("claim", task["id"], "--as", "a")
    cli.json("task", "start", task["id"], "--as", "a")
    assert cli.json("unregister", "a", "--as", "a")["name"] == "a"
    shown = cli.json("task", "show", task["id"])
    assert (shown["state"], shown["attempts"], shown["claimed_by"]) == ("queued", 0, None)
    requeue = [e for e in cli.events() if e["event"] == "task-requeue"]
    assert [(e["agent"], e["attempts"], e["reason"]) for e in requeue] == [
        ("a", 0, "claimant unregistered")
    ]
