"""Writes across a connection lost after the server committed (issue 23 point 6).

A proxy (tests/pg_fault_proxy.py) lets a statement reach the real server, which runs and commits
it, then swallows the answer and cuts the connection. The library retries such a write once,
under the same operation id, and the retry returns the first outcome instead of doing it again;
where the outcome cannot be known, the error says so and how to check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drasill_cli import agents, lifecycle, locks, messages, tasks
from drasill_cli.config import Config
from drasill_cli.errors import MeshUnusable
from drasill_cli.mesh import Mesh
from tests.pg_fault_proxy import FaultProxy

COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the simple-protocol COMMIT psycopg sends


@pytest.fixture
def proxy(tmp_path: Path, pg_mesh_url: str) -> Iterator[FaultProxy]:
    started = FaultProxy(tmp_path / "proxy", pg_mesh_url)
    yield started
    started.close()


@pytest.fixture
def faulty(proxy: FaultProxy, pg_mesh_url: str) -> Iterator[Mesh]:
    """A mesh whose connections go through `proxy`."""
    opened = Mesh.open(config=Config(), mesh_url=proxy.url(pg_mesh_url))
    try:
        yield opened
    finally:
        opened.backend.close()


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def events(url: str, kind: str) -> int:
    return len(rows(url, f"SELECT seq FROM mesh_audit WHERE event = '{kind}'"))  # noqa: S608 -- a test's constant event names


def test_a_send_cut_after_commit_is_delivered_once(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    agents.register(faulty, "bob")
    proxy.cut_after(b"INSERT INTO mesh_messages")
    sent = messages.send(faulty, "bob", "exactly once", sender="alice")
    assert proxy.cuts == 1
    assert [m["to"] for m in sent] == ["bob"]
    assert rows(pg_mesh_url, "SELECT id FROM mesh_messages") == [(sent[0]["id"],)]
    assert rows(pg_mesh_url, "SELECT id FROM mesh_sent") == [(sent[0]["id"],)]
    assert events(pg_mesh_url, "send") == 1
    taken = messages.consume(faulty, "bob")
    assert taken is not None
    assert taken["body"] == "exactly once"
    assert messages.consume(faulty, "bob") is None


def test_a_claim_cut_after_commit_claims_one_task(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    agents.register(faulty, "worker")
    first = tasks.add_task(faulty, "first")
    second = tasks.add_task(faulty, "second")
    # One statement in autocommit: cut once the server answered it (committed).
    proxy.cut_after(b"UPDATE mesh_tasks AS t SET state = 'claimed'")
    claimed = tasks.claim_next(faulty, "worker")
    assert proxy.cuts == 1
    assert claimed["id"] == first["id"]
    assert claimed["claimed_by"] == "worker"
    states = {str(i): str(s) for i, s in rows(pg_mesh_url, "SELECT id, state FROM mesh_tasks")}
    assert states == {first["id"]: "claimed", second["id"]: "queued"}
    assert events(pg_mesh_url, "task-claim") == 1


def test_a_claim_by_id_cut_after_commit_is_won_not_lost(faulty: Mesh, proxy: FaultProxy) -> None:
    agents.register(faulty, "worker")
    task = tasks.add_task(faulty, "only")
    proxy.cut_after(b"UPDATE mesh_tasks SET state", COMMIT)
    claimed = tasks.claim(faulty, "worker", task["id"])  # not "claim lost: claimed by worker"
    assert proxy.cuts == 1
    assert claimed["state"] == "claimed"


def test_a_task_add_cut_after_commit_adds_one_task(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    proxy.cut_after(b"INSERT INTO mesh_tasks", COMMIT)
    added = tasks.add_task(faulty, "once")
    assert proxy.cuts == 1
    assert rows(pg_mesh_url, "SELECT id FROM mesh_tasks") == [(added["id"],)]


def test_a_take_cut_after_commit_returns_the_message_taken(faulty: Mesh, proxy: FaultProxy) -> None:
    agents.register(faulty, "bob")
    messages.send(faulty, "bob", "one", sender="alice")
    messages.send(faulty, "bob", "two", sender="alice")
    proxy.cut_after(b"UPDATE mesh_messages SET state = 'read'", COMMIT)
    taken = messages.consume(faulty, "bob")
    assert proxy.cuts == 1
    assert taken is not None
    assert taken["body"] == "one"  # not lost: the retry gives back what the first take took
    second = messages.consume(faulty, "bob")
    assert second is not None
    assert second["body"] == "two"


def test_an_outcome_that_cannot_be_known_says_so_and_how_to_check(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    agents.register(faulty, "worker")
    task = tasks.add_task(faulty, "only")
    proxy.cut_after(b"UPDATE mesh_tasks SET state", COMMIT, refuse=True)  # the retry fails too
    with pytest.raises(MeshUnusable) as caught:
        tasks.claim(faulty, "worker", task["id"])
    assert caught.value.code == "database-outcome-unknown"
    assert "may or may not have happened" in caught.value.message
    assert f"mesh task show {task['id']}" in caught.value.message
    assert "rolled back" not in caught.value.message
    assert rows(pg_mesh_url, "SELECT state FROM mesh_tasks") == [("claimed",)]  # it had


def test_a_write_cut_before_its_commit_rolled_back_and_says_so(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    agents.register(faulty, "worker")
    task = tasks.add_task(faulty, "only")
    proxy.cut_after(b"UPDATE mesh_tasks SET state", refuse=True)  # before COMMIT was sent
    with pytest.raises(MeshUnusable) as caught:
        tasks.claim(faulty, "worker", task["id"])
    assert caught.value.code == "database-connection-lost"
    assert "rolled back" in caught.value.message
    assert rows(pg_mesh_url, "SELECT state FROM mesh_tasks") == [("queued",)]


def test_prune_drops_the_rows_of_operations_done_long_ago(pg_mesh_url: str) -> None:
    mesh = Mesh.open(config=Config(), mesh_url=pg_mesh_url)
    try:
        tasks.add_task(mesh, "recent")  # its operation's row stays: a retry may still come
        with psycopg.connect(pg_mesh_url, autocommit=True) as conn:
            conn.execute("INSERT INTO mesh_ops (op, at) VALUES ('old', now() - interval '2 days')")
        assert len(rows(pg_mesh_url, "SELECT op FROM mesh_ops")) == 2
        lifecycle.prune(mesh)
        kept = [str(op) for (op,) in rows(pg_mesh_url, "SELECT op FROM mesh_ops")]
        assert len(kept) == 1
        assert kept[0].startswith("task-add-")
    finally:
        mesh.backend.close()


def test_an_unlock_cut_after_commit_reports_the_lock_released(
    faulty: Mesh, proxy: FaultProxy, tmp_path: Path, pg_mesh_url: str
) -> None:
    agents.register(faulty, "worker")
    target = tmp_path / "file.txt"
    target.write_text("x")
    locks.acquire(faulty, [str(target)], "worker")
    proxy.cut_after(b"DELETE FROM mesh_locks", COMMIT)
    released = locks.release(faulty, [str(target)], "worker")  # not "you hold no lock on it"
    assert proxy.cuts == 1
    assert len(released) == 1
    assert rows(pg_mesh_url, "SELECT key FROM mesh_locks") == []


def test_a_registration_cut_after_commit_is_registered_once(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str
) -> None:
    proxy.cut_after(b"INSERT INTO mesh_agents", COMMIT)
    agent = agents.register(faulty, "worker", pid=os.getpid())
    assert proxy.cuts == 1
    assert agent["name"] == "worker"
    assert rows(pg_mesh_url, "SELECT name FROM mesh_agents") == [("worker",)]


def test_a_retry_waits_for_a_first_try_the_server_still_runs_only_so_long(
    faulty: Mesh, proxy: FaultProxy, pg_mesh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across a network cut the server keeps the first try's transaction open (and its
    operation's row locked) until it notices; the retry waits for it a bounded time, then
    says the first rolled back (it never sent its COMMIT), instead of hanging."""
    from drasill_cli.backends.postgres import ops

    monkeypatch.setattr(ops, "RETRY_WAIT_S", 0.5)
    agents.register(faulty, "worker")
    task = tasks.add_task(faulty, "only")
    proxy.cut_after(b"UPDATE mesh_tasks SET state", partition=True)
    outcome: list[BaseException | dict[str, object]] = []

    def claim() -> None:
        try:
            outcome.append(tasks.claim(faulty, "worker", task["id"]))
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    claimer = threading.Thread(target=claim, daemon=True)
    claimer.start()
    claimer.join(timeout=15)
    assert not claimer.is_alive(), "the retry hung on the first try's open transaction"
    assert isinstance(outcome[0], MeshUnusable)
    assert outcome[0].code == "database-connection-lost"
    proxy.close()  # the server hears the cut at last: the first try rolls back
    assert rows(pg_mesh_url, "SELECT state FROM mesh_tasks") == [("queued",)]
