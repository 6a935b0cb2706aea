"""Tasks: add, show, list, the claimant-only lifecycle, dependencies, review, requeue (issue 4).

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, tasks
from drasill_cli.backends.directory import layout
from drasill_cli.config import Config, LifecycleConfig
from drasill_cli.errors import NegativeOutcome, NotRegistered
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner, register, tree
from tests.harness import directory_of

pytestmark = pytest.mark.both_backends

TASK_KEYS = {
    "id",
    "title",
    "body",
    "state",
    "priority",
    "created_by",
    "claimed_by",
    "created_at",
    "updated_at",
    "attempts",
    "result",
    "depends_on",
    "review",
    "approved_by",
}


def fails(cli: MeshRunner, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `mesh ARGS --json` expecting a failure: its exit code and its error object."""
    done = cli.run(*args, "--json")
    assert done.returncode != 0, done.stdout
    return done.returncode, json.loads(done.stdout)["error"]


def events(mesh_dir: Path) -> list[dict[str, Any]]:
    lines = (mesh_dir / "audit" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_add_show_list(cli: MeshRunner, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    added = cli.json(
        "task", "add", "fix the parser", "--body", "see issue 7\nline two", "--priority", "3",
        "--review", "--as", "lead", cwd=workdir,
    )  # fmt: skip
    assert added.keys() >= TASK_KEYS
    assert added["id"].startswith("t-")
    assert added["state"] == "queued"
    assert (added["priority"], added["created_by"], added["review"]) == (3, "lead", True)
    assert (added["attempts"], added["depends_on"], added["claimed_by"]) == (0, [], None)
    assert added["cwd"] == str(workdir)
    assert cli.json("task", "show", added["id"][:12]) == added
    second = cli.json("task", "add", "write docs")
    assert second["created_by"] is None
    assert second["id"] > added["id"]
    assert [t["id"] for t in cli.json("task", "list")] == [added["id"], second["id"]]
    assert cli.json("task", "list", "--state", "completed") == []
    human = cli.run("task", "show", added["id"])
    assert "fix the parser" in human.stdout
    assert "line two" in human.stdout
    listing = cli.run("task", "list")
    assert listing.returncode == 0
    assert "write docs" in listing.stdout


def test_claim_start_done_and_the_audit_trail(cli: MeshRunner) -> None:
    cli.register("ann")
    task = cli.json("task", "add", "build it")
    claimed = cli.json("claim", task["id"], "--as", "ann")
    assert (claimed["state"], claimed["claimed_by"]) == ("claimed", "ann")
    assert claimed["claimed_at"] is not None
    assert cli.json("task", "start", task["id"], "--as", "ann")["state"] == "working"
    finished = cli.json("task", "done", task["id"], "--result", "built", "--as", "ann")
    assert (finished["state"], finished["result"], finished["claimed_by"]) == (
        "completed",
        "built",
        "ann",
    )
    trail = [(e["event"], e["actor"], e["state"]) for e in cli.events() if "task" in e]
    assert trail == [
        ("task-add", None, "queued"),
        ("task-claim", "ann", "claimed"),
        ("task-start", "ann", "working"),
        ("task-done", "ann", "completed"),
    ]
    assert all(e["task"] == task["id"] for e in cli.events() if e["event"] != "register")


def test_done_by_a_non_claimant_exits_1_and_changes_nothing(cli: MeshRunner) -> None:
    cli.register("ann", "bob")
    task = cli.json("task", "add", "guarded")
    cli.json("claim", task["id"], "--as", "ann")
    before = cli.snapshot()
    for verb in ("done", "start", "fail", "release"):
        code, error = fails(cli, "task", verb, task["id"], "--as", "bob")
        assert (code, error["code"]) == (1, "not-claimant")
        assert "claimed by ann" in error["message"]
    assert cli.snapshot() == before
    human = cli.run("task", "done", task["id"], "--as", "bob")
    assert human.returncode == 1
    assert human.stderr.startswith("error: ") and "only the claimant" in human.stderr


def test_review_needs_another_agent(cli: MeshRunner) -> None:
    cli.register("ann", "rev", "other")
    task = cli.json("task", "add", "risky change", "--review")
    cli.json("claim", task["id"], "--as", "ann")
    in_review = cli.json("task", "done", task["id"], "--as", "ann", "--result", "patch ready")
    assert in_review["state"] == "review"
    before = cli.snapshot()
    code, error = fails(cli, "task", "approve", task["id"], "--as", "ann")
    assert (code, error["code"]) == (1, "self-approval")
    assert cli.snapshot() == before
    approved = cli.json("task", "approve", task["id"], "--as", "rev")
    assert (approved["state"], approved["approved_by"], approved["result"]) == (
        "completed",
        "rev",
        "patch ready",
    )
    code, error = fails(cli, "task", "approve", task["id"], "--as", "other")
    assert (code, error["code"]) == (1, "wrong-state")


def test_dependencies_gate_claims(cli: MeshRunner) -> None:
    cli.register("ann", "bob")
    base = cli.json("task", "add", "base")
    top = cli.json("task", "add", "on top", "--priority", "9", "--depends", base["id"][:15])
    assert top["depends_on"] == [base["id"]]
    first = cli.json("claim", "--next", "--as", "ann")
    assert first["id"] == base["id"]  # the higher-priority task waits for it
    code, error = fails(cli, "claim", "--next", "--as", "bob")
    assert (code, error["code"], error["waiting"]) == (1, "nothing-claimable", 1)
    code, error = fails(cli, "claim", top["id"], "--as", "bob")
    assert (code, error["code"]) == (1, "dependencies-pending")
    assert base["id"] in error["message"]
    cli.json("task", "done", base["id"], "--as", "ann")
    assert cli.json("claim", "--next", "--as", "bob")["id"] == top["id"]


def test_unknown_dependency_exits_2_and_writes_nothing(cli: MeshRunner) -> None:
    cli.json("task", "add", "exists")
    before = cli.snapshot()
    code, error = fails(cli, "task", "add", "orphan", "--depends", "t-nope")
    assert (code, error["code"]) == (2, "unknown-dependency")
    assert cli.snapshot() == before


@pytest.mark.directory_only("plants a cyclic task record, which no command can make")
def test_dependency_cycle_exits_2_and_writes_nothing(cli: MeshRunner, mesh: Mesh) -> None:
    one = tasks.add_task(mesh, "one")
    two = tasks.add_task(mesh, "two", depends_on=[one["id"]])
    directory_of(mesh).store.write(
        layout.task_record(one["id"]), {**one, "depends_on": [two["id"]]}
    )
    before = tree(cli.mesh_dir)
    code, error = fails(cli, "task", "add", "three", "--depends", two["id"])
    assert (code, error["code"]) == (2, "dependency-cycle")
    assert one["id"] in error["message"] and two["id"] in error["message"]
    assert tree(cli.mesh_dir) == before
    # A completed task blocks nobody, so a cycle through it is harmless.
    directory_of(mesh).store.write(layout.task_record(one["id"]), {**one, "state": "completed"})
    assert cli.json("task", "add", "four", "--depends", two["id"])["depends_on"] == [two["id"]]


def test_release_is_conditional_on_the_owner(cli: MeshRunner) -> None:
    cli.register("ann", "lead", "bob")
    task = cli.json("task", "add", "contested")
    cli.json("claim", task["id"], "--as", "ann")
    taken = cli.json("task", "release", task["id"], "--force", "--as", "lead")
    assert (taken["state"], taken["claimed_by"]) == ("queued", None)
    cli.json("claim", task["id"], "--as", "bob")
    # ann's late release must not clobber bob's newer claim.
    code, error = fails(cli, "task", "release", task["id"], "--as", "ann")
    assert (code, error["code"]) == (1, "not-claimant")
    assert cli.json("task", "show", task["id"])["claimed_by"] == "bob"
    released = cli.json("task", "release", task["id"], "--as", "bob")
    assert (released["state"], released["claimed_by"]) == ("queued", None)
    code, error = fails(cli, "task", "release", task["id"], "--force", "--as", "lead")
    assert (code, error["code"]) == (1, "wrong-state")
    forced = [e for e in cli.events() if e["event"] == "task-release" and e["forced"]]
    assert forced[0]["previous_claimant"] == "ann"


def test_failed_task_runs_again_only_when_forced(cli: MeshRunner) -> None:
    cli.register("ann", "bob", "lead")
    task = cli.json("task", "add", "flaky")
    cli.json("claim", task["id"], "--as", "ann")
    failed = cli.json("task", "fail", task["id"], "--result", "tests red", "--as", "ann")
    assert (failed["state"], failed["result"]) == ("failed", "tests red")
    code, error = fails(cli, "claim", task["id"], "--as", "bob")
    assert (code, error["code"]) == (1, "claim-lost")
    cli.json("task", "release", task["id"], "--force", "--as", "lead")
    assert cli.json("claim", "--next", "--as", "bob")["id"] == task["id"]


@pytest.mark.parametrize(
    ("args", "code", "error_code"),
    [
        (["task", "add", "   "], 2, "invalid-title"),
        (["task", "add", "two\nlines"], 2, "invalid-title"),
        (["task", "add", "x", "--priority", "2000000"], 2, "invalid-priority"),
        (["task", "add", "x", "--as", "Bad Name"], 2, "invalid-name"),
        (["task", "list", "--state", "done"], 2, "invalid-state"),
        (["claim", "--next"], 2, "missing-identity"),
        (["claim", "t-", "--next", "--as", "ann"], 2, "invalid-usage"),
        (["claim", "t-", "--as", "ann"], 2, "ambiguous-task-id"),
        (["claim", "t-zzzz", "--as", "ann"], 3, "unknown-task"),
        (["task", "show", "../etc"], 2, "invalid-task-id"),
        (["task", "done", "t-zzzz", "--as", "ann"], 3, "unknown-task"),
    ],
)
def test_bad_input_exit_codes(
    cli: MeshRunner, mesh: Mesh, args: list[str], code: int, error_code: str
) -> None:
    # The cases that look tasks up in the mesh; the rest are refused before it is read.
    cli.register("ann")
    tasks.add_task(mesh, "one")
    tasks.add_task(mesh, "two")
    before = cli.snapshot()
    got_code, error = fails(cli, *args)
    assert (got_code, error["code"]) == (code, error_code)
    assert cli.snapshot() == before


def test_nothing_to_claim_exits_1(cli: MeshRunner) -> None:
    cli.register("ann")
    code, error = fails(cli, "claim", "--as", "ann")
    assert (code, error["code"], error["waiting"]) == (1, "nothing-claimable", 0)


def test_stale_queue_marker_is_skipped_and_cleared(mesh: Mesh) -> None:
    register(mesh, "ann")
    stale = tasks.add_task(mesh, "claimed before a crash", priority=5)
    fresh = tasks.add_task(mesh, "still queued")
    record = {**stale, "state": "claimed", "claimed_by": "ghost"}
    store = directory_of(mesh).store
    store.write(layout.task_record(stale["id"]), record)  # as if killed before the unlink
    store.touch(f"{layout.QUEUE_DIR}/0000000_t-gone.ref")  # record never written
    assert tasks.claim_next(mesh, "ann")["id"] == fresh["id"]
    assert directory_of(mesh).store.names(layout.QUEUE_DIR, layout.MARKER_SUFFIX) == []


@pytest.mark.directory_only("plants damaged task files (tests/test_postgres_board.py: rows)")
def test_damaged_task_record_is_quarantined_not_fatal(cli: MeshRunner, mesh: Mesh) -> None:
    good = tasks.add_task(mesh, "good")
    (cli.mesh_dir / "tasks" / "t-broken.json").write_text("{not json")
    (cli.mesh_dir / "tasks" / "t-wrong.json").write_text(json.dumps({"id": "t-wrong"}))
    listed = cli.run("task", "list", "--json")
    assert listed.returncode == 0
    assert [t["id"] for t in json.loads(listed.stdout)] == [good["id"]]
    assert listed.stderr.count("quarantined") == 2
    assert len(list((cli.mesh_dir / "quarantine").iterdir())) == 2


def test_killed_claimant_task_is_requeued_by_prune(cli: MeshRunner, mesh: Mesh) -> None:
    cli.register("w2")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cli.json("register", "w1", "--pid", str(worker.pid))
        task = cli.json("task", "add", "long job")
        cli.json("claim", task["id"], "--as", "w1")
        cli.json("task", "start", task["id"], "--as", "w1")
        assert tasks.requeue_tasks_of(mesh, "other") == []
    finally:
        worker.kill()
        worker.wait()
    assert agents.Observer(mesh).state(agents.get(mesh, "w1")) == "dead"
    report = cli.json("prune")
    assert [
        (t["id"], t["state"], t["attempts"], t["claimed_by"]) for t in report["tasks_requeued"]
    ] == [(task["id"], "queued", 1, None)]
    assert tasks.requeue_tasks_of(mesh, "w1") == []  # idempotent
    assert cli.json("prune")["tasks_requeued"] == []
    shown = cli.json("task", "show", task["id"])
    assert (shown["state"], shown["attempts"]) == ("queued", 1)
    assert cli.json("claim", "--next", "--as", "w2")["id"] == task["id"]
    requeue = [e for e in cli.events() if e["event"] == "task-requeue"]
    assert [(e["task"], e["agent"], e["attempts"]) for e in requeue] == [(task["id"], "w1", 1)]


def test_requeue_abandons_at_max_attempts_and_force_revives(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(lifecycle=LifecycleConfig(max_attempts=2)))
    register(mesh, "w1", "w2", "w3")
    task = tasks.add_task(mesh, "cursed")
    tasks.claim(mesh, "w1", task["id"])
    assert tasks.requeue_tasks_of(mesh, "w1")[0]["state"] == "queued"
    tasks.claim(mesh, "w2", task["id"])
    abandoned = tasks.requeue_tasks_of(mesh, "w2")
    assert [(t["state"], t["attempts"]) for t in abandoned] == [("abandoned", 2)]
    with pytest.raises(NegativeOutcome):
        tasks.claim_next(mesh, "w3")
    revived = tasks.release(mesh, task["id"], "lead", force=True)
    assert (revived["state"], revived["attempts"]) == ("queued", 2)
    assert tasks.claim_next(mesh, "w3")["id"] == task["id"]
    assert os.listdir(mesh_dir / "tasks" / "held" / "w1") == []


def _requeue_worker(mesh_dir: Path, out: Any) -> None:
    mesh = Mesh.open(mesh_dir, Config())
    out.put([t["id"] for t in tasks.requeue_tasks_of(mesh, "gone")])


def test_concurrent_requeues_change_each_task_once(mesh: Mesh, mesh_dir: Path) -> None:
    register(mesh, "gone")
    ids = [tasks.add_task(mesh, f"job {i}")["id"] for i in range(20)]
    for task_id in ids:
        tasks.claim(mesh, "gone", task_id)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_requeue_worker, args=(mesh_dir, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    changed = [task_id for _ in procs for task_id in out.get(timeout=60)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(changed) == ids
    assert {t["attempts"] for t in tasks.list_tasks(mesh)} == {1}


def _gone_pid() -> int:
    """The pid of a process that has already exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_registered_agent_cannot_claim(cli: MeshRunner) -> None:
    cli.json("register", "d", "--pid", str(_gone_pid()))
    task = cli.json("task", "add", "work")
    for args in (["claim", "--next", "--as", "d"], ["claim", task["id"], "--as", "d"]):
        before = cli.snapshot()
        code, error = fails(cli, *args)
        assert code == 1
        assert error["code"] == "claimant-dead"
        assert "mesh register d --pid" in error["message"] and "--replace" in error["message"]
        assert cli.snapshot() == before
        human = cli.run(*args)
        assert human.returncode == 1
        assert human.stderr.startswith("error: ") and "mesh register d" in human.stderr
    assert cli.json("task", "show", task["id"])["state"] == "queued"
    cli.json("register", "d", "--pid", str(os.getpid()), "--replace")
    assert cli.json("claim", "--next", "--as", "d")["claimed_by"] == "d"


def test_dead_claimant_refused_through_the_api(mesh: Mesh) -> None:
    agents.register(mesh, "d", pid=_gone_pid())
    task = tasks.add_task(mesh, "work")
    with pytest.raises(NegativeOutcome) as caught:
        tasks.claim_next(mesh, "d")
    assert caught.value.code == "claimant-dead"
    with pytest.raises(NegativeOutcome) as caught:
        tasks.claim(mesh, "d", task["id"])
    assert caught.value.code == "claimant-dead"
    with pytest.raises(NotRegistered):  # an unregistered name is refused (issue 27)
        tasks.claim(mesh, "unregistered-worker", task["id"])


def test_unregistered_claimant_is_refused_before_anything_is_claimed(cli: MeshRunner) -> None:
    nothing = cli.run("claim", "--next", "--as", "k5")
    assert nothing.returncode == 3 and "mesh register k5" in nothing.stderr
    task = cli.json("task", "add", "work")
    refused = cli.run("claim", "--next", "--as", "k5", "--json")
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"]["code"] == "not-registered"
    assert cli.json("task", "show", task["id"])["state"] == "queued"


def test_requeue_of_an_unregistered_claimant_keeps_attempts(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(lifecycle=LifecycleConfig(max_attempts=1)))
    register(mesh, "w1", "w2")
    task = tasks.add_task(mesh, "work")
    tasks.claim(mesh, "w1", task["id"])
    [back] = tasks.requeue_tasks_of(mesh, "w1", died=False)
    assert (back["state"], back["attempts"], back["claimed_by"]) == ("queued", 0, None)
    requeue = [e for e in events(mesh_dir) if e["event"] == "task-requeue"]
    assert [(e["reason"], e["attempts"]) for e in requeue] == [("claimant unregistered", 0)]
    tasks.claim(mesh, "w2", task["id"])
    [gone] = tasks.requeue_tasks_of(mesh, "w2")  # died: attempts + 1 reaches max_attempts
    assert (gone["state"], gone["attempts"]) == ("abandoned", 1)


def test_a_claim_reads_no_other_task_inside_the_task_exclusion(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 point 1: the dependencies' states are read before the claimed task's exclusion
    (completed is final, so a look before stays true); the decision inside only compares."""
    board = mesh.backend.board
    deciding = [False]
    asked: list[bool] = []
    real_change, real_get = board.change, board.get

    def change(task_id: str, decide: Any, **kwargs: Any) -> Any:
        def watched(task: Any) -> Any:
            deciding[0] = True
            try:
                return decide(task)
            finally:
                deciding[0] = False

        return real_change(task_id, watched, **kwargs)

    def get(task_id: str) -> Any:
        asked.append(deciding[0])
        return real_get(task_id)

    monkeypatch.setattr(board, "change", change)
    monkeypatch.setattr(board, "get", get)
    agents.register(mesh, "worker", pid=os.getpid())
    first = tasks.add_task(mesh, "first")
    second = tasks.add_task(mesh, "second", depends_on=[first["id"]])
    third = tasks.add_task(mesh, "third", depends_on=[first["id"]])
    tasks.claim(mesh, "worker", first["id"])
    with pytest.raises(NegativeOutcome):
        tasks.claim(mesh, "worker", second["id"])  # waits for first
    tasks.done(mesh, first["id"], "worker")
    assert tasks.claim(mesh, "worker", second["id"])["state"] == "claimed"
    assert tasks.claim_next(mesh, "worker")["id"] == third["id"]
    assert asked
    assert not any(asked), "another task was read inside a task's exclusion"
