"""The PostgreSQL task board's own guarantees, beyond the contract suite (tests/storage): one
connection per thread, a change's lock wait that ends with its lock, reads nested in a change,
quarantine into `mesh_quarantine`, and numbers above every stored row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from drasill_cli import clock
from drasill_cli.backends import open_backend
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.config import Config
from drasill_cli.location import Location
from drasill_cli.models import Task
from drasill_cli.storage.auditlog import event
from drasill_cli.storage.exclusion import InsideExclusion


@pytest.fixture
def backend(pg_mesh_url: str) -> Iterator[PostgresBackend]:
    made = open_backend(Location.of_url(pg_mesh_url), Config())
    assert isinstance(made, PostgresBackend)
    yield made
    made.close()


def make(task_id: str) -> Task:
    now = clock.iso()
    return Task(id=task_id, title="a task", state="queued", created_at=now, updated_at=now)


def live(backend: PostgresBackend, pids: list[int]) -> int:
    """How many of the server processes `pids` are still connected (seen from elsewhere)."""
    with psycopg.connect(backend.db.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def gone(backend: PostgresBackend, pids: list[int]) -> bool:
    """Whether the connections of `pids` end within a few seconds."""
    deadline = time.monotonic() + 5
    while live(backend, pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return live(backend, pids) == 0


def test_each_thread_has_its_own_connection_closed_when_it_ends(
    backend: PostgresBackend,
) -> None:
    pids: list[int] = []

    def note() -> None:
        with backend.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
            assert row is not None
            pids.append(row[0])

    threads = [threading.Thread(target=note) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    note()
    assert len(set(pids)) == 4
    assert gone(backend, pids[:3]), "a finished thread's connection is closed"
    assert live(backend, pids[3:]) == 1
    backend.close()
    assert gone(backend, pids[3:])
    assert backend.board.queued() == [], "and a closed backend connects again when used"


def test_racing_changes_append_inside_their_transactions_without_deadlock(
    backend: PostgresBackend,
) -> None:
    """`then` writes on the changing thread's connection (a savepoint of the change), as the
    audit line does: racing changers of several tasks all finish, each line kept once."""
    board = backend.board
    tasks = [board.add(make).id for _ in range(3)]
    racers = 12
    barrier = threading.Barrier(racers)
    failures: list[BaseException] = []

    def describe(_before: Task, after: Task) -> dict[str, Any]:
        return event("test", None, task=after.id, attempts=after.attempts)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            for task_id in tasks[i % 3 :] + tasks[: i % 3]:
                board.change(task_id, lambda t: t.replace(attempts=t.attempts + 1), event=describe)
        except BaseException as exc:  # the test reports what each racer met
            failures.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with backend.transaction() as cur:
        cur.execute(
            "SELECT details->>'task', count(*) FROM mesh_audit WHERE event = 'test'"
            " GROUP BY 1 ORDER BY 1"
        )
        assert cur.fetchall() == [(task_id, racers) for task_id in tasks]
    assert [t.attempts for t in board.all()] == [racers] * 3


def test_a_read_inside_a_change_is_refused_not_a_savepoint(backend: PostgresBackend) -> None:
    """A decision reaching the database (even a read-only view's read) is refused: it would
    nest a savepoint inside the change's transaction (`storage.exclusion`)."""
    board = backend.board
    other, task = board.add(make), board.add(make)
    view = backend.read_only_view().board

    def decide(t: Task) -> Task:
        view.get(other.id)
        return t.replace(state="working", claimed_by="ann")

    with pytest.raises(InsideExclusion):
        board.change(task.id, decide)
    stored = board.get(task.id)
    assert stored is not None and stored.state == "queued"
    assert board.held_by("ann") == []


def test_a_damaged_row_goes_to_mesh_quarantine(backend: PostgresBackend) -> None:
    board = backend.board
    task = board.add(make)
    raw = {**task.to_record(), "state": "bogus"}
    with backend.transaction() as cur:
        cur.execute("UPDATE mesh_tasks SET record = %s WHERE id = %s", (Jsonb(raw), task.id))
    assert backend.read_only_view().board.get(task.id) is None
    assert backend.warnings[-1].endswith("left in place by a read-only run")
    assert board.exists(task.id), "a read-only run moves nothing"
    assert board.get(task.id) is None
    assert not board.exists(task.id)
    assert "quarantined task t-0001" in backend.warnings[-1]
    with backend.transaction() as cur:
        cur.execute("SELECT kind, key, raw FROM mesh_quarantine")
        assert cur.fetchall() == [("tasks", task.id, raw)]


def test_numbers_start_above_every_stored_row(backend: PostgresBackend) -> None:
    """Rows stored without the sequence (an import) never collide with a new task."""
    board = backend.board
    board.add(make)
    planted = make("t-0040")
    with backend.transaction() as cur:
        cur.execute(
            "INSERT INTO mesh_tasks (id, number, state, record) VALUES (%s, 40, 'queued', %s)",
            (planted.id, Jsonb(planted.to_record())),
        )
    assert board.add(make).id == "t-0041"
    assert board.queued() == ["t-0001", "t-0040", "t-0041"]
