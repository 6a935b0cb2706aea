"""A PostgreSQL mesh under faults: completion that never writes, a server that accepts no
writes (a read-only role or a standby), listener rows of killed waiters, statements that
stall, and servers restarted under long-running commands."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import MeshRunner, with_schema
from tests.test_completion import complete


def _schema(url: str) -> str:
    return url.rpartition("search_path%3D")[2]


def _tables(pg_url: str, schema: str) -> list[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    return [row[0] for row in rows]


# ---- 12. completion never writes -------------------------------------------------------------


def test_completion_against_an_empty_schema_makes_no_tables(
    tmp_path: Path, pg_url: str, pg_mesh_url: str
) -> None:
    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=pg_mesh_url)
    assert complete(cli, "bash", "mesh send ") == ["all"]
    assert complete(cli, "bash", "mesh claim ") == []
    assert _tables(pg_url, _schema(pg_mesh_url)) == []


# ---- 13. a server that accepts no writes; listener rows of killed waiters ---------------------


def read_only_url(url: str) -> str:
    """`url` whose sessions default to read-only transactions (as a read-only role, or a
    standby, refuses every write with the same SQLSTATE, 25006)."""
    return url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20", 1)


def test_a_server_that_accepts_no_writes_is_named_in_one_line(
    tmp_path: Path, pg_mesh_url: str
) -> None:
    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=pg_mesh_url)
    cli.json("register", "alice")
    cli.json("register", "bob")
    reader = MeshRunner(tmp_path / "unused", tmp_path / "home", url=read_only_url(pg_mesh_url))
    assert [a["name"] for a in reader.json("agents")] == ["alice", "bob"]  # reading works
    done = reader.run("send", "bob", "hi", "--as", "alice")
    assert done.returncode == 4, done
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "read-only" in line and "standby" in line and "report it" not in line, line
    assert (
        json.loads(reader.run("send", "bob", "hi", "--as", "alice", "--json").stdout)["error"][
            "code"
        ]
        == "database-read-only"
    )
    doctor = reader.run("doctor", "--json")
    found = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert found["database-writable"]["status"] == "fail", found
    assert "read-only" in found["database-writable"]["detail"]
    writable = {c["name"]: c for c in cli.json("doctor")["checks"]}["database-writable"]
    assert writable["status"] == "ok", writable


def test_prune_clears_the_listener_rows_of_killed_waiters(
    tmp_path: Path, pg_url: str, pg_mesh_url: str
) -> None:
    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=pg_mesh_url)
    cli.json("register", "bob")
    waiter = subprocess.Popen(
        cli.argv("inbox", "bob", "--wait", "60"),
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listening = "SELECT count(*) FROM mesh_listening"
    with psycopg.connect(pg_mesh_url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(listening).fetchone() == (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.execute(listening).fetchone() != (0,)
        os.kill(waiter.pid, signal.SIGKILL)
        waiter.wait()
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid IN (SELECT pid FROM mesh_listening)"
        deadline = time.monotonic() + 30
        while conn.execute(gone).fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.execute(listening).fetchone() != (0,)  # left behind by the killed waiter
        dry = cli.json("prune", "--dry-run")
        assert conn.execute(listening).fetchone() != (0,), dry  # a dry run removes nothing
        cli.json("prune")
        assert conn.execute(listening).fetchone() == (0,)


# ---- 8. a stalled server never hangs a command ----------------------------------------------


def test_a_statement_blocked_past_the_statement_timeout_exits_4_naming_it(
    tmp_path: Path, pg_url: str, pg_mesh_url: str
) -> None:
    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=pg_mesh_url)
    cli.config("[store]\nstatement_timeout = 1\n")
    cli.json("register", "alice")
    cli.json("register", "bob")
    with psycopg.connect(pg_mesh_url) as holder:  # a session holding the table: sends block
        holder.execute("LOCK TABLE mesh_messages IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        done = cli.run("send", "bob", "hi", "--as", "alice", timeout=30)
        took = time.monotonic() - started
        holder.rollback()
    assert done.returncode == 4, done
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "statement_timeout" in line and "1 s" in line, line
    assert took < 8, took
    empty = cli.run("inbox", "bob", "--peek", "--json")  # nothing was half-done
    assert (empty.returncode, json.loads(empty.stdout)) == (1, None), empty


def test_the_statement_timeout_is_set_on_every_connection(pg_mesh_url: str) -> None:
    from drasill_cli.config import Config, StoreConfig
    from drasill_cli.mesh import Mesh

    mesh = Mesh.open(
        config=Config(store=StoreConfig(statement_timeout=2.5, idle_timeout=7)),
        mesh_url=pg_mesh_url,
    )
    try:
        db = mesh.backend.db  # type: ignore[attr-defined]  # a PostgreSQL mesh's own handle
        with db.transaction() as cur:
            cur.execute(
                "SELECT current_setting('statement_timeout'),"
                " current_setting('idle_in_transaction_session_timeout')"
            )
            assert cur.fetchone() == ("2500ms", "7s")
        watch_conn = db.connect()
        try:
            row = watch_conn.execute("SELECT current_setting('statement_timeout')").fetchone()
            assert row == ("2500ms",)
        finally:
            watch_conn.close()
    finally:
        mesh.backend.close()


# ---- 7. restarts are survived (a cluster of this module's own: it is restarted) --------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Path]:
    """A cluster of these tests' own: they restart and stop it (never the shared one)."""
    from tests import pg_cluster

    if pg_cluster.server_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to restart")
    base = Path(tempfile.mkdtemp(prefix="drasill-pg-faults-"))
    try:
        pg_cluster.start(base)
        yield base
    finally:
        pg_cluster.stop(base)


@pytest.fixture
def own_url(own_cluster: Path) -> str:
    from tests import pg_cluster

    return with_schema(pg_cluster.url(own_cluster), f"t_{uuid.uuid4().hex[:12]}")


def _started(cli: MeshRunner, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli.argv(*args),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM mesh_listening").fetchone()
    return int(row[0]) if row else 0


def _until(what: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_waiting_commands_carry_on_across_a_server_restart(
    own_cluster: Path, own_url: str, tmp_path: Path
) -> None:
    from tests import pg_cluster

    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=own_url)
    for name in ("alice", "bob", "carol"):
        cli.json("register", name)
    (tmp_path / "work").mkdir()
    inbox = _started(cli, "inbox", "bob", "--wait", "60", "--json")
    claim = _started(cli, "claim", "--next", "--wait", "60", "--as", "carol", "--json")
    follow = _started(cli, "log", "--follow", "--json")
    held = _started(
        cli, "lock", str(tmp_path / "work"), "--as", "alice", "--ttl", "6", "--",
        sys.executable, "-c", "import time; time.sleep(7); raise SystemExit(7)",
    )  # fmt: skip
    _until(lambda: _listeners(own_url) >= 3 and len(cli.json("locks")) == 1)
    pg_cluster.restart(own_cluster, down_for=1.0)
    cli.json("send", "bob", "after the restart", "--as", "alice")
    task = cli.json("task", "add", "after the restart")["id"]

    out, err = inbox.communicate(timeout=60)
    assert inbox.returncode == 0, (out, err)
    assert json.loads(out)["body"] == "after the restart"
    out, err = claim.communicate(timeout=60)
    assert claim.returncode == 0, (out, err)
    assert json.loads(out)["id"] == task
    assert held.wait(timeout=60) == 7, held.communicate()
    assert cli.json("locks") == []  # released by the command, not left to its lease
    assert follow.stdout is not None
    events = []
    deadline = time.monotonic() + 30
    while "unlock" not in events and time.monotonic() < deadline:
        events.append(json.loads(follow.stdout.readline())["event"])
    follow.terminate()
    _, err = follow.communicate(timeout=30)
    assert {"send", "task-add", "task-claim", "unlock"} <= set(events), (events, err)


def test_an_idle_connection_cut_by_a_restart_is_replaced_on_its_next_use(
    own_url: str, own_cluster: Path
) -> None:
    """The dashboard's first action, or `lock -- CMD`'s release, after a restart."""
    from drasill_cli.config import Config
    from drasill_cli.mesh import Mesh
    from tests import pg_cluster

    mesh = Mesh.open(config=Config(), mesh_url=own_url)
    try:
        mesh.backend.presence.names()
        pg_cluster.restart(own_cluster, down_for=0.2)
        assert mesh.backend.presence.names() == []
    finally:
        mesh.backend.close()


def test_the_dashboards_first_action_after_a_restart_is_done(
    own_cluster: Path, own_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("starlette")
    from tests import pg_cluster
    from tests.test_dashboard import Dashboard

    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=own_url)
    cli.json("register", "alice")
    board = Dashboard(cli)
    try:
        assert board.act("task", {"title": "before the restart"})[0] == 200
        pg_cluster.restart(own_cluster, down_for=0.5)
        code, answer = board.act("task", {"title": "after the restart"})
        assert code == 200, answer
    finally:
        board.stop()
    assert [t["title"] for t in cli.json("task", "list")] == [
        "before the restart",
        "after the restart",
    ]


def test_a_waiter_that_cannot_reconnect_in_time_says_so_once(
    own_cluster: Path, own_url: str, tmp_path: Path
) -> None:
    from tests import pg_cluster

    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=own_url)
    cli.config("[store]\nreconnect_timeout = 1.5\n")
    cli.json("register", "bob")
    inbox = _started(cli, "inbox", "bob", "--wait", "60")
    _until(lambda: _listeners(own_url) >= 1)
    down = threading.Thread(target=pg_cluster.restart, args=(own_cluster, 6.0))
    started = time.monotonic()
    down.start()
    try:
        out, err = inbox.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        down.join()
    assert inbox.returncode == 4, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "reconnect_timeout" in err and "1.5 s" in err, err
    assert took < 6, took


def test_a_server_that_stops_answering_after_login_ends_the_operation(own_url: str) -> None:
    """SIGSTOP the server process of this connection: the server's own timeouts cannot fire,
    so the mesh gives up by itself, with one exit-4 line naming the limit."""
    from drasill_cli.config import Config, StoreConfig
    from drasill_cli.errors import MeshError
    from drasill_cli.mesh import Mesh

    store = StoreConfig(statement_timeout=0.5, idle_timeout=0.5)
    mesh = Mesh.open(config=Config(store=store), mesh_url=own_url)
    db = mesh.backend.db  # type: ignore[attr-defined]  # a PostgreSQL mesh's own handle
    pid = int(db.statement("SELECT pg_backend_pid()")[0][0])
    os.kill(pid, signal.SIGSTOP)
    waking = threading.Timer(15, os.kill, (pid, signal.SIGCONT))  # never left stopped
    waking.start()
    started = time.monotonic()
    try:
        outcome: object = mesh.backend.presence.names()  # on the stopped server process
    except MeshError as exc:
        outcome = exc
    finally:
        took = time.monotonic() - started
        waking.cancel()
        os.kill(pid, signal.SIGCONT)
        mesh.backend.close()
    assert took < 10, (took, outcome)
    error = outcome
    assert isinstance(error, MeshError), outcome
    assert error.code == "database-timeout" and error.exit_code == 4, error.message
    assert "statement_timeout" in error.message and "no answer" in error.message, error.message


def test_a_transaction_whose_connection_was_lost_inside_never_reports_success(
    pg_mesh_url: str,
) -> None:
    """A block that swallowed the failure of its connection (as a warning, like a failed
    audit append) used to end "done" although psycopg skipped the commit of a broken
    connection without a word: a claim came back to its claimer while the task stayed queued,
    and a second agent claimed it too (seen in the soak test)."""
    from drasill_cli.config import Config
    from drasill_cli.errors import MeshUnusable
    from drasill_cli.mesh import Mesh

    mesh = Mesh.open(config=Config(), mesh_url=pg_mesh_url)
    db = mesh.backend.db  # type: ignore[attr-defined]  # a PostgreSQL mesh's own handle
    try:
        with pytest.raises(MeshUnusable) as caught, db.transaction() as cur:
            cur.execute("INSERT INTO mesh_guards (name) VALUES ('probe')")
            cur.execute("SELECT pg_backend_pid()")
            row = cur.fetchone()
            with psycopg.connect(pg_mesh_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            with contextlib.suppress(psycopg.Error):  # swallowed, as a warning would be
                cur.execute("SELECT 1")
        assert caught.value.code == "database-connection-lost", caught.value.message
    finally:
        mesh.backend.close()
    with psycopg.connect(pg_mesh_url) as conn:
        assert conn.execute("SELECT name FROM mesh_guards WHERE name = 'probe'").fetchall() == []
