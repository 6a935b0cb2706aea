"""A PostgreSQL mesh under faults: completion that never writes, a server that accepts no
writes (a read-only role or a standby), listener rows of killed waiters, statements that
stall, and servers restarted under long-running commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import MeshRunner
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
    return url.replace(
        "options=", "options=-cdefault_transaction_read_only%3Don%20", 1
    )


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
    assert json.loads(reader.run("send", "bob", "hi", "--as", "alice", "--json").stdout)[
        "error"
    ]["code"] == "database-read-only"
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
    listening = f"SELECT count(*) FROM {_schema(pg_mesh_url)}.mesh_listening"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(listening).fetchone() == (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.execute(listening).fetchone() != (0,)
        os.kill(waiter.pid, signal.SIGKILL)
        waiter.wait()
        gone = (
            "SELECT count(*) FROM pg_stat_activity WHERE pid IN"
            f" (SELECT pid FROM {_schema(pg_mesh_url)}.mesh_listening)"
        )
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

    mesh = Mesh.open(config=Config(store=StoreConfig(statement_timeout=2.5, idle_timeout=7)), mesh_url=pg_mesh_url)
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
