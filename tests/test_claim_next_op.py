"""`claim --next` as one `TaskBoard.claim_next` (issue 26 point 5).

On PostgreSQL the claim itself is one statement (one round trip: `FOR UPDATE SKIP LOCKED`, the
update, the audit row); before, the core walked the queue with a round trip per candidate. On
both backends racing processes claim each task exactly once.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drasill_cli import tasks
from drasill_cli.config import Config
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh
from tests.conftest import register

WORKERS = 4
TASKS = 60


@pytest.fixture
def pg_mesh(pg_mesh_url: str) -> Iterator[Mesh]:
    opened = Mesh.open(config=Config(), mesh_url=pg_mesh_url)
    register(opened, "ann", "bob")  # claiming takes a registered name
    try:
        yield opened
    finally:
        opened.backend.close()


def _counting(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[int]]:
    """Count every statement sent (its text) and every round trip (`Connection.wait`)."""
    sent: list[str] = []
    trips = [0]
    # `Connection.execute` runs through `Cursor.execute`: counted there, once.
    cursor_execute, wait = psycopg.Cursor.execute, psycopg.Connection.wait

    def cur_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return cursor_execute(self, query, *args, **kwargs)

    def counted_wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return wait(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", cur_execute)
    monkeypatch.setattr(psycopg.Connection, "wait", counted_wait)
    return sent, trips


def test_claim_next_on_postgres_is_one_statement(
    pg_mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [tasks.add_task(pg_mesh, f"task {n}")["id"] for n in range(5)]
    tasks.claim(pg_mesh, "ann", ids[0])  # the queue's head is gone: the claim looks further
    dep = tasks.add_task(pg_mesh, "waits", priority=9, depends_on=[ids[0]])["id"]
    sent, trips = _counting(monkeypatch)
    claimed = tasks.claim_next(pg_mesh, "bob")
    assert claimed["id"] == ids[1]
    board = [sql for sql in sent if "mesh_tasks" in sql]
    assert len(board) == 1, board  # the whole claim: pick, update, audit row, counts
    sent.clear()
    trips[0] = 0
    claim = pg_mesh.backend.board.claim_next("bob", "2026-01-01T00:00:00Z", {"event": "x"})
    assert claim.task is not None
    assert claim.task.id == ids[2]
    assert (len(sent), trips[0]) == (1, 1)  # one statement, one round trip
    assert dep not in {claim.task.id, claimed["id"]}


def test_claim_next_on_postgres_reports_waiting_in_the_same_statement(
    pg_mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tasks.add_task(pg_mesh, "first")["id"]
    second = tasks.add_task(pg_mesh, "second", depends_on=[first])["id"]
    tasks.claim(pg_mesh, "ann", first)
    sent, _ = _counting(monkeypatch)
    with pytest.raises(NegativeOutcome) as caught:
        tasks.claim_next(pg_mesh, "bob")
    assert caught.value.code == "nothing-claimable"
    assert caught.value.details["waiting"] == 1
    board = [sql for sql in sent if "mesh_tasks" in sql]
    # The claim and its count of waiting tasks are one statement; naming what they wait on
    # (issue 27) is one read of the board after it, outside every exclusion.
    assert len(board) == 2 and board[0].startswith("WITH pick AS"), board
    assert [task["id"] for task in caught.value.details["waits"]] == [second]


def _claimer(location: str, name: str, out: Any, barrier: Any) -> None:
    if location.startswith("postgresql"):
        mesh = Mesh.open(config=Config(), mesh_url=location)
    else:
        mesh = Mesh.open(Path(location), Config())
    mine: list[str] = []
    barrier.wait()
    try:
        while True:
            try:
                mine.append(tasks.claim_next(mesh, name)["id"])
            except NegativeOutcome as exc:
                if exc.code != "nothing-claimable":
                    raise
                break
    finally:
        out.put((name, mine))


@pytest.mark.parametrize("backend", ["directory", "postgres"])
def test_racing_processes_claim_each_task_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        location = str(request.getfixturevalue("pg_mesh_url"))
        mesh = Mesh.open(config=Config(), mesh_url=location)
    else:
        location = str(tmp_path / "mesh")
        mesh = Mesh.open(Path(location), Config())
    try:
        register(mesh, *(f"w{i}" for i in range(WORKERS)))
        added = [tasks.add_task(mesh, f"task {n}", priority=n % 3)["id"] for n in range(TASKS)]
        # One task waits on another: claimable only once that is completed (never, here).
        blocked = tasks.add_task(mesh, "blocked", priority=5, depends_on=[added[0]])["id"]
    finally:
        if backend == "postgres":
            mesh.backend.close()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_claimer, args=(location, f"w{i}", out, barrier)) for i in range(WORKERS)
    ]
    for proc in procs:
        proc.start()
    claims = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    every = [task_id for mine in claims.values() for task_id in mine]
    assert sorted(every) == sorted(added)  # each exactly once; the blocked one by nobody
    if backend == "postgres":
        mesh = Mesh.open(config=Config(), mesh_url=location)
    try:
        states = {task["id"]: task for task in tasks.list_tasks(mesh)}
        assert states[blocked]["state"] == "queued"
        for name, mine in claims.items():
            assert all(states[task_id]["claimed_by"] == name for task_id in mine)
        from drasill_cli import audit

        events = [e for e in audit.read_events(mesh) if e.get("event") == "task-claim"]
        assert sorted(e["task"] for e in events) == sorted(added)
    finally:
        if backend == "postgres":
            mesh.backend.close()


def test_claim_next_on_postgres_sets_a_damaged_task_aside_and_claims_the_next(
    pg_mesh: Mesh, pg_mesh_url: str
) -> None:
    damaged, good = (tasks.add_task(pg_mesh, title)["id"] for title in ("damaged", "good"))
    with psycopg.connect(pg_mesh_url, autocommit=True) as conn:
        conn.execute("UPDATE mesh_tasks SET record = record - 'title' WHERE id = %s", (damaged,))
    assert tasks.claim_next(pg_mesh, "bob")["id"] == good
    assert any(damaged in warning for warning in pg_mesh.warnings)
    with psycopg.connect(pg_mesh_url, autocommit=True) as conn:
        assert conn.execute("SELECT key FROM mesh_quarantine").fetchall() == [(damaged,)]
        assert conn.execute("SELECT id FROM mesh_tasks").fetchall() == [(good,)]


def test_claim_next_on_postgres_waits_for_a_ready_task_only_when_nothing_else_is_free(
    pg_mesh: Mesh, pg_mesh_url: str
) -> None:
    import threading
    import time

    only = tasks.add_task(pg_mesh, "only")["id"]
    with psycopg.connect(pg_mesh_url) as holder:
        # Another process in the middle of a change of the task (it stays queued).
        holder.execute("SELECT 1 FROM mesh_tasks WHERE id = %s FOR UPDATE", (only,))
        release = threading.Timer(0.5, holder.commit)
        release.start()
        started = time.monotonic()
        claimed = tasks.claim_next(pg_mesh, "bob")
        release.join()
    assert claimed["id"] == only
    assert time.monotonic() - started >= 0.4  # it waited for the row, then claimed it
