"""The PostgreSQL backend's own guarantees: its tables made on first use in the first schema of
the search path (once, under an advisory lock, however many open at once), and LISTEN/NOTIFY
waits that announce only committed changes, stay inside their mesh, and survive a cut
connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from drasill_cli.backends.postgres import PostgresBackend, changes
from drasill_cli.backends.postgres.schema import LATEST, TABLES, first_search_path_schema
from drasill_cli.errors import MeshUnusable
from drasill_cli.storage.changes import INBOXES, TASKS, TIMEOUT, Change, inbox
from tests.conftest import postgres_backend


@pytest.fixture
def backend(pg_mesh_url: str) -> Iterator[PostgresBackend]:
    made = postgres_backend(pg_mesh_url)
    yield made
    made.close()


def schema_of(url: str) -> str:
    return url.rpartition("%3D")[2]


def announce(backend: PostgresBackend, change: Change) -> None:
    with backend.db.transaction():
        backend.changes.notify(change)


def test_tables_are_made_on_first_use_in_the_first_schema(pg_url: str, pg_mesh_url: str) -> None:
    backend = postgres_backend(pg_mesh_url)
    backend.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema_of(pg_mesh_url),),
        ).fetchall()
        assert {r[0] for r in rows} == set(TABLES)
        conn.execute(f"SET search_path = {schema_of(pg_mesh_url)}")
        version = conn.execute("SELECT max(version), count(*) FROM mesh_schema").fetchone()
    assert version == (LATEST, LATEST)
    assert backend.location == pg_mesh_url  # no password: shown as given


def test_many_first_opens_at_once_migrate_once(pg_mesh_url: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            postgres_backend(pg_mesh_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    backend = postgres_backend(pg_mesh_url)
    with backend.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM mesh_schema")
        assert cur.fetchone() == (LATEST,)
    backend.close()


def test_tables_of_a_newer_version_are_exit_4(backend: PostgresBackend, pg_mesh_url: str) -> None:
    with backend.db.transaction() as cur:
        cur.execute("INSERT INTO mesh_schema (version, applied_by) VALUES (%s, 'future')", (99,))
    with pytest.raises(MeshUnusable, match="upgrade drasill-cli") as caught:
        postgres_backend(pg_mesh_url)
    assert caught.value.code == "database-newer"


@pytest.mark.parametrize(
    ("path", "first"),
    [('"$user", public', None), ("team_a, public", "team_a"), ('"Team A"', "Team A"), ("X", "x")],
)
def test_first_search_path_schema(path: str, first: str | None) -> None:
    assert first_search_path_schema(path) == first


def test_a_rolled_back_change_is_never_announced(backend: PostgresBackend) -> None:
    with backend.changes.watch(TASKS) as watch:
        with pytest.raises(RuntimeError), backend.db.transaction():
            backend.changes.notify(Change(TASKS))
            raise RuntimeError("the operation failed before its commit")
        assert watch.next(0.5) == TIMEOUT


def test_meshes_in_other_schemas_do_not_hear_each_other(pg_url: str) -> None:
    a = postgres_backend(f"{pg_url}&options=-csearch_path%3Dmesh_a_{time.time_ns()}")
    b = postgres_backend(f"{pg_url}&options=-csearch_path%3Dmesh_b_{time.time_ns()}")
    try:
        with a.changes.watch(inbox("bob")) as watch_a:
            announce(b, Change(INBOXES, "bob"))
            assert watch_a.next(0.5) == TIMEOUT
            announce(a, Change(INBOXES, "bob"))
            assert watch_a.next(5) == {Change(INBOXES, "bob")}
    finally:
        a.close()
        b.close()


def test_a_cut_watch_reconnects_and_says_look_again(backend: PostgresBackend) -> None:
    with backend.changes.watch(inbox("bob"), TASKS) as watch:
        assert watch._conn is not None
        pid = watch._conn.info.backend_pid
        with backend.db.transaction() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # lost meanwhile: every topic comes back as changed, so the waiter reads the tables
        assert watch.next(5) == {Change(INBOXES, "bob"), Change(TASKS)}
        announce(backend, Change(TASKS))
        assert watch.next(5) == {Change(TASKS)}


def test_the_slow_safety_recheck_reports_every_topic(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "RECHECK_S", 0.3)
    with backend.changes.watch(TASKS) as watch:
        started = time.monotonic()
        assert watch.next(5) == {Change(TASKS)}
        assert 0.25 <= time.monotonic() - started < 2


def test_a_wake_up_arrives_quickly(backend: PostgresBackend) -> None:
    with backend.changes.watch(inbox("bob")) as watch:
        timer = threading.Timer(0.2, announce, (backend, Change(INBOXES, "bob")))
        started = time.monotonic()
        timer.start()
        try:
            assert watch.next(10) == {Change(INBOXES, "bob")}
        finally:
            timer.join()
        assert time.monotonic() - started < 1


def test_a_read_only_view_refuses_writes(backend: PostgresBackend) -> None:
    view = backend.read_only_view()
    assert view.read_only
    assert view.location == backend.location
    with view.transaction() as cur:
        cur.execute("SELECT count(*) FROM mesh_agents")
        assert cur.fetchone() == (0,)
    with pytest.raises(MeshUnusable, match="read-only view"), view.transaction() as cur:
        cur.execute("INSERT INTO mesh_audit (event) VALUES ('dry run')")
