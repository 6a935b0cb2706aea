"""How a PostgreSQL mesh announces changes: after the commit, only on channels someone listens on
(`mesh_listening`, `mesh_listened`), and never so that a waiter misses a change; the audit log's
`follow` with appends that commit out of `seq` order; a version-1 mesh migrated to listeners.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drasill_cli import agents, clock, locks, messages
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.backends.postgres.auditlog import GAP_MAX_S, GAP_MIN_S, _Place
from drasill_cli.backends.postgres.changes import channel
from drasill_cli.backends.postgres.schema import LATEST, MIGRATION_1
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from drasill_cli.storage import auditlog
from drasill_cli.storage.changes import INBOXES, TIMEOUT, Change, inbox
from drasill_cli.storage.presence import REMOVE
from tests.conftest import postgres_backend
from tests.storage.mail import message


@pytest.fixture
def mesh(pg_mesh_url: str) -> Iterator[Mesh]:
    opened = Mesh(postgres_backend(pg_mesh_url), Config())
    agents.register(opened, "alice")
    agents.register(opened, "bob")
    yield opened
    opened.backend.close()


def _listening(backend: PostgresBackend) -> list[tuple[str, int]]:
    with backend.transaction() as cur:
        cur.execute("SELECT channel, pid FROM mesh_listening ORDER BY channel, pid")
        return [(str(c), int(p)) for c, p in cur.fetchall()]


def test_a_send_nobody_waits_for_notifies_nothing_and_a_watch_is_woken(
    mesh: Mesh, pg_mesh_url: str
) -> None:
    backend = mesh.backend
    assert isinstance(backend, PostgresBackend)
    bob = channel(backend.changes.mesh_id, inbox("bob"))
    with psycopg.connect(pg_mesh_url, autocommit=True) as eavesdropper:
        eavesdropper.execute(f'LISTEN "{bob}"')  # listening, but not listed as a listener
        messages.send(mesh, "bob", "nobody waits", sender="alice")
        assert list(eavesdropper.notifies(timeout=0.5)) == []
        with backend.changes.watch(inbox("bob")) as watch:
            assert [c for c, _ in _listening(backend)] == [bob]
            messages.send(mesh, "bob", "now somebody does", sender="alice")
            assert watch.next(5) == {Change(INBOXES, "bob")}
        heard = list(eavesdropper.notifies(timeout=1))
        assert [note.channel for note in heard] == [bob]
    assert _listening(backend) == []  # the watch took its rows with it


def test_a_waiter_that_missed_a_racing_send_is_woken_by_it(mesh: Mesh, pg_mesh_url: str) -> None:
    """A send racing a waiter's start: either the waiter's first look finds the message, or
    the send is announced to it. A miss would show as a timeout (the safety re-check is 30 s)."""
    sender = Mesh(postgres_backend(pg_mesh_url), Config())
    rng = random.Random(7)
    try:
        for round_no in range(30):
            delay = rng.uniform(0, 0.02)
            timer = threading.Timer(
                delay, messages.send, (sender, "bob", f"round {round_no}"), {"sender": "alice"}
            )
            timer.start()
            try:
                with mesh.backend.changes.watch(inbox("bob")) as watch:
                    if not mesh.backend.mailbox.has_unread("bob"):
                        started = time.monotonic()
                        assert watch.next(5) != TIMEOUT, f"round {round_no}: never woken"
                        assert time.monotonic() - started < 2
            finally:
                timer.join()
            taken = messages.consume(mesh, "bob")
            assert taken is not None and taken["body"] == f"round {round_no}"
    finally:
        sender.backend.close()


def test_a_watch_clears_the_rows_of_sessions_that_are_gone(mesh: Mesh) -> None:
    backend = mesh.backend
    assert isinstance(backend, PostgresBackend)
    with backend.transaction() as cur:  # a waiter killed long ago left its row
        cur.execute("INSERT INTO mesh_listening (channel, pid) VALUES ('mesh_gone', 2147483000)")
    with backend.changes.watch(inbox("bob")) as watch:
        assert watch._conn is not None
        own = watch._conn.info.backend_pid
        assert _listening(backend) == [(channel(backend.changes.mesh_id, inbox("bob")), own)]
    assert _listening(backend) == []


def test_a_version_1_mesh_is_migrated_and_its_waiters_woken(pg_url: str) -> None:
    schema = f"v1_{time.time_ns()}"
    url = f"{pg_url}&options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET LOCAL search_path TO {schema}")
        conn.execute(MIGRATION_1.encode())
        conn.execute("INSERT INTO mesh_schema (version, applied_by) VALUES (1, 'older')")
    mesh = Mesh(postgres_backend(url), Config())
    backend = mesh.backend
    assert isinstance(backend, PostgresBackend)
    try:
        agents.register(mesh, "bob")
        with backend.transaction() as cur:
            cur.execute("SELECT max(version) FROM mesh_schema")
            assert cur.fetchone() == (LATEST,)
        with mesh.backend.changes.watch(inbox("bob")) as watch:
            messages.send(mesh, "bob", "hello", sender="bob")
            assert watch.next(5) == {Change(INBOXES, "bob")}
    finally:
        mesh.backend.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_follow_gives_a_row_that_commits_after_a_higher_one(mesh: Mesh, pg_mesh_url: str) -> None:
    backend = mesh.backend
    stop = threading.Event()
    given: list[dict[str, Any]] = []
    arrived = threading.Condition()

    def follow() -> None:
        for event in backend.audit_log.follow(stop=stop):
            with arrived:
                given.append(event)
                arrived.notify_all()

    def wait_for(kind: str) -> None:
        with arrived:
            assert arrived.wait_for(lambda: any(e["event"] == kind for e in given), timeout=10), (
                kind,
                [e["event"] for e in given],
            )

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        wait_for("register")
        with psycopg.connect(pg_mesh_url) as slow:  # draws its seq first, commits last
            slow.execute(
                "INSERT INTO mesh_audit (event, actor, details) VALUES ('slow', NULL, %s)",
                (psycopg.types.json.Jsonb(auditlog.event("slow", None)),),
            )
            mesh.append_audit_event("quick", "alice")
            wait_for("quick")
            for n in range(3):  # longer than GAP_MIN_S, the reader looking meanwhile
                time.sleep(GAP_MIN_S * 0.6)
                mesh.append_audit_event(f"meanwhile{n}", "alice")
                wait_for(f"meanwhile{n}")
            slow.commit()
        mesh.append_audit_event("after", "alice")  # its announcement wakes the reader
        wait_for("after")
        wait_for("slow")
    finally:
        stop.set()
        mesh.append_audit_event("stop", None)
        reader.join(10)
    kinds = [e["event"] for e in given if e["event"] in ("slow", "quick", "after")]
    assert sorted(kinds) == ["after", "quick", "slow"]  # each once, the slow one too


def test_the_follow_floor_passes_gaps_once_their_transactions_have_ended() -> None:
    place = _Place()
    assert place.take(5)  # the first row read: what lies below it is settled
    assert not place.take(5)
    assert place.take(7)  # 6 is drawn, not committed yet
    place.settle(100.0, xmin=40, xmax=50)
    assert (place.floor, place.given) == (5, {7})
    place.settle(100.0 + GAP_MAX_S / 2, xmin=45, xmax=60)  # one running then runs still
    assert place.floor == 5
    assert place.take(6)  # it came: given, and the floor rises past both
    place.settle(100.0 + GAP_MAX_S / 2, xmin=45, xmax=60)
    assert (place.floor, place.given) == (7, set())
    for seq in (9, 11, 13):  # 8, 10 and 12 drawn by transactions still running
        assert place.take(seq)
    place.settle(200.0, xmin=55, xmax=70)
    place.settle(200.0 + GAP_MIN_S / 2, xmin=70, xmax=71)  # all ended, but too soon to trust
    assert place.floor == 7
    place.settle(200.0 + GAP_MIN_S, xmin=70, xmax=71)  # they all ended: passed together
    assert (place.floor, place.given) == (13, set())
    assert not place.take(8)  # rolled back for good, or committed after its transaction ended
    assert place.take(15)
    place.settle(300.0, xmin=10, xmax=90)  # a transaction of another program stays open
    place.settle(300.0 + GAP_MAX_S, xmin=10, xmax=95)
    assert (place.floor, place.given) == (15, set())
    assert place.take(17)  # 16 drawn, its transaction running
    place.settle(400.0, xmin=95, xmax=100)
    # 16 commits after the next look read the rows and before that look's snapshot:
    place.settle(400.0 + GAP_MIN_S, xmin=100, xmax=101)
    assert place.floor == 15  # that look could not have seen it: not passed
    assert place.take(16)  # the look after finds it
    place.settle(400.0 + 2 * GAP_MIN_S, xmin=101, xmax=101)
    assert (place.floor, place.given) == (17, set())


def test_a_host_with_a_fast_clock_reads_the_servers(
    pg_mesh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases, stamps and ids follow the database's clock, whatever this host's says."""
    skew = 120.0
    real_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(skew * 1e9))
    monkeypatch.setattr(time, "time", lambda: real_ns() / 1e9 + skew)
    monkeypatch.setattr(clock, "_current", clock.Clock())  # a fresh clock, restored after
    mesh = Mesh(postgres_backend(pg_mesh_url), Config())
    try:
        agents.register(mesh, "alice")
        [lock] = locks.acquire(mesh, [str(tmp_path / "f.py")], "alice", ttl=60)
        sent = messages.send(mesh, "alice", "note to self", sender="alice")[0]
        with psycopg.connect(pg_mesh_url) as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        assert row is not None
        server = float(row[0])
        assert abs(clock.parse_iso(lock["acquired_at"]) - server) < 5
        assert abs(clock.parse_iso(lock["expires_at"]) - (server + 60)) < 5
        created = clock.id_time(sent["id"])
        assert created is not None and abs(created - server) < 5
        assert abs(clock.parse_iso(sent["created_at"]) - server) < 5
    finally:
        mesh.backend.close()


def test_a_send_to_an_agent_being_removed_waits_and_delivers_nothing(
    mesh: Mesh, pg_mesh_url: str
) -> None:
    """The recipient's row is read FOR KEY SHARE: a removal under way is waited for."""
    remover = postgres_backend(pg_mesh_url)
    deciding = threading.Event()

    def retire(_current: Any) -> Any:
        deciding.set()
        time.sleep(1.0)  # bob's row is locked meanwhile, as while his mail is archived
        return REMOVE

    thread = threading.Thread(target=remover.presence.change, args=("bob", retire))
    thread.start()
    try:
        assert deciding.wait(10)
        late = message("bob", "too late")
        event = auditlog.event("send", "alice", id=late["id"], to="bob")
        assert mesh.backend.mailbox.deliver(late, event) is False
    finally:
        thread.join(20)
        remover.close()
    assert not mesh.is_registered("bob")
    assert mesh.backend.mailbox.unread_count("bob") == 0
