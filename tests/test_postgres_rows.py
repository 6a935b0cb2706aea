"""A PostgreSQL mesh under attack and faults (issue 23): a row is never a path on a host, one
damaged row never blocks an inbox, one mesh per schema, and meshes sharing a server do not leak
to each other.

Any member of a mesh can write any row, so a row is input from another host: these tests plant
rows as such a member would (straight SQL), then run the real commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.sql import SQL, Composed, Identifier

from drasill_cli import clock
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.backends.postgres.attachments import cache_root
from drasill_cli.storage.changes import AGENTS, INBOXES, MESH, TASKS, Change, inbox
from tests.conftest import MeshRunner, postgres_backend, with_schema
from tests.storage.mail import attached, deliver, message, register


@pytest.fixture
def pg_cli(tmp_path: Path, pg_mesh_url: str) -> MeshRunner:
    home = tmp_path / "home"
    home.mkdir()
    return MeshRunner(tmp_path / "unused", home, url=pg_mesh_url)


@pytest.fixture
def backend(
    pg_mesh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PostgresBackend]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = postgres_backend(pg_mesh_url)
    yield made
    made.close()


def victim(tmp_path: Path) -> Path:
    """A user's folder outside the mesh and its cache, with one precious file (mode 0755)."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_bytes(b"do not touch")
    folder.chmod(0o755)
    return folder


def untouched(folder: Path) -> bool:
    return (
        (folder / "precious.txt").read_bytes() == b"do not touch"
        and stat.S_IMODE(folder.stat().st_mode) == 0o755
        and os.listdir(folder) == ["precious.txt"]
    )


def sql(
    url: str, statement: str | Composed, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def quarantined(url: str) -> list[tuple[object, ...]]:
    return sql(url, "SELECT kind, key FROM mesh_quarantine ORDER BY id")


def no_traceback(done: object) -> None:
    text = getattr(done, "stdout", "") + getattr(done, "stderr", "")
    assert "Traceback" not in text, text


# ---- 1. a database row is never a path on a host ------------------------------------------


def test_an_orphan_row_naming_a_folder_never_makes_prune_delete_it(
    pg_cli: MeshRunner, pg_mesh_url: str, tmp_path: Path
) -> None:
    """A member writes an attachment row whose digest is a folder of another host: prune's
    orphan clean-up removes the row and never the folder or its files."""
    folder = victim(tmp_path)
    pg_cli.json("register", "alice")
    msg_id = clock.new_id("m")
    sql(
        pg_mesh_url,
        "INSERT INTO mesh_attachments (message_id, name, size, sha256, data, created)"
        " VALUES (%s, 'precious.txt', 1, %s, 'x', now() - interval '30 days')",
        (msg_id, str(folder)),
    )
    done = pg_cli.run("prune", "--json")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert untouched(folder)
    assert sql(pg_mesh_url, "SELECT count(*) FROM mesh_attachments") == [(0,)]
    assert ("attachments", f"{msg_id}/precious.txt") in quarantined(pg_mesh_url)


@pytest.mark.parametrize(
    ("digest", "name"),
    [
        ("{victim}", "precious.txt"),
        ("{sha}", "{victim}/precious.txt"),
        ("{sha}", "../../../../victim/precious.txt"),
        ("{sha}", ".."),
        ("{sha}/../../../../victim", "precious.txt"),
        ("{SHA}", "precious.txt"),
    ],
)
def test_dropping_rows_with_path_like_values_touches_nothing_outside_the_cache(
    backend: PostgresBackend, pg_mesh_url: str, tmp_path: Path, digest: str, name: str
) -> None:
    folder = victim(tmp_path)
    # A real cache folder next to the planted rows, so relative names have a place to start.
    real = clock.new_id("m")
    backend.attachments.put(real, [attached("r.txt", b"real")])
    sha = hashlib.sha256(b"real").hexdigest()
    values = {"victim": str(folder), "sha": sha, "SHA": sha.upper()}
    msg_id = clock.new_id("m")
    sql(
        pg_mesh_url,
        "INSERT INTO mesh_attachments (message_id, name, size, sha256, data)"
        " VALUES (%s, %s, 1, %s, 'x')",
        (msg_id, name.format(**values), digest.format(**values)),
    )
    assert backend.attachments.drop(msg_id)
    assert untouched(folder)
    assert (cache_root() / sha / "r.txt").read_bytes() == b"real", "the real copy stays"
    assert [k for k, _ in quarantined(pg_mesh_url)] == ["attachments"]
    assert any("quarantined attachments" in w for w in backend.warnings)


def test_a_message_whose_row_names_a_folder_never_chmods_it(
    pg_cli: MeshRunner, pg_mesh_url: str, tmp_path: Path
) -> None:
    folder = victim(tmp_path)
    pg_cli.json("register", "bob")
    source = tmp_path / "a.txt"
    source.write_bytes(b"content")
    bad = pg_cli.json("send", "bob", "with a file", "--attach", str(source))
    good = pg_cli.json("send", "bob", "plain")
    sql(pg_mesh_url, "UPDATE mesh_attachments SET sha256 = %s", (str(folder),))
    for args in (("inbox", "bob", "--list"), ("inbox", "bob")):
        done = pg_cli.run(*args, "--json")
        no_traceback(done)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert [m["id"] for m in (got if isinstance(got, list) else [got])] == [good["id"]]
        assert untouched(folder)
    assert ("messages", f"inbox/bob/unread/{bad['id']}") in quarantined(pg_mesh_url)


# ---- 9. one damaged row never blocks an inbox ---------------------------------------------


def test_a_damaged_attachment_quarantines_its_message_and_the_mailbox_flows(
    pg_cli: MeshRunner, pg_mesh_url: str, tmp_path: Path
) -> None:
    pg_cli.json("register", "bob")
    source = tmp_path / "a.txt"
    source.write_bytes(b"content")
    damaged = pg_cli.json("send", "bob", "with a file", "--attach", str(source))
    good = pg_cli.json("send", "bob", "plain")
    sql(pg_mesh_url, "UPDATE mesh_attachments SET data = 'tampered', size = 8")
    shutil.rmtree(pg_cli.env["XDG_CACHE_HOME"])  # read as on another host: nothing cached
    doctor = pg_cli.json("doctor")
    found = {c["name"]: c for c in doctor["checks"]}
    assert found["database-quarantine"]["status"] == "warn"
    assert f"{damaged['id']}/a.txt" in found["database-quarantine"]["detail"]

    listed = pg_cli.run("inbox", "bob", "--list", "--json")
    no_traceback(listed)
    assert listed.returncode == 0, listed.stderr
    assert [m["id"] for m in json.loads(listed.stdout)] == [good["id"]]
    assert damaged["id"] in listed.stderr and "damaged" in listed.stderr
    assert pg_cli.json("inbox", "bob")["id"] == good["id"]
    assert pg_cli.run("inbox", "bob", "--json").returncode == 1, "nothing else waits"
    doctor = pg_cli.json("doctor")
    found = {c["name"]: c for c in doctor["checks"]}
    assert found["database-quarantine"]["status"] == "warn"
    assert "1 messages" in found["database-quarantine"]["detail"]


def test_a_damaged_attachment_read_in_process_is_quarantined_not_an_error(
    backend: PostgresBackend, pg_mesh_url: str
) -> None:
    msg_id = clock.new_id("m")
    files = backend.attachments.put(msg_id, [attached("d.txt", b"data")])
    deliver(backend, message("bob", attachments=files, msg_id=msg_id))
    plain = message("bob")
    deliver(backend, plain)
    sql(pg_mesh_url, "UPDATE mesh_attachments SET data = 'oops', size = 4")
    for folder, dirs, names in os.walk(cache_root(), topdown=False):  # as on another host
        for entry in names:
            os.unlink(os.path.join(folder, entry))
        for entry in dirs:
            os.rmdir(os.path.join(folder, entry))
    assert [m["id"] for m in backend.mailbox.unread("bob")] == [plain["id"]]
    assert backend.mailbox.take_next("bob") == plain
    assert any(msg_id in w and "damaged" in w for w in backend.warnings)
    (kept,) = sql(pg_mesh_url, "SELECT raw FROM mesh_quarantine WHERE kind = 'attachments'")
    assert isinstance(kept[0], dict) and kept[0]["data_hex"] == b"oops".hex(), "nothing lost"


# ---- 4. one mesh per schema ---------------------------------------------------------------


@pytest.fixture
def two_schemas(pg_url: str) -> Iterator[tuple[str, str]]:
    """Two schema names: a mesh made in `old`, `new` not there yet (both dropped after)."""
    tag = uuid.uuid4().hex[:12]
    old, new = f"t_old_{tag}", f"t_new_{tag}"
    postgres_backend(with_schema(pg_url, old)).close()
    yield old, new
    for schema in (old, new):
        sql(pg_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def agents_in(pg_url: str, schema: str) -> list[str]:
    query = SQL("SELECT name FROM {}.mesh_agents").format(Identifier(schema))
    return [str(r[0]) for r in sql(pg_url, query)]


def test_a_missing_first_schema_is_made_never_skipped(
    pg_url: str, two_schemas: tuple[str, str]
) -> None:
    """search_path=new,old with `new` absent: the mesh is made in `new`, and the mesh in `old`
    (which PostgreSQL would fall back to) is never touched."""
    old, new = two_schemas
    backend = postgres_backend(with_schema(pg_url, f"{new},{old}"))
    try:
        assert backend.db.schema == new
        register(backend, "alice")
    finally:
        backend.close()
    assert agents_in(pg_url, new) == ["alice"]
    assert agents_in(pg_url, old) == []


def test_a_first_schema_the_role_cannot_make_is_exit_4_naming_it(
    tmp_path: Path, pg_url: str, two_schemas: tuple[str, str]
) -> None:
    old, new = two_schemas
    role = f"t_role_{uuid.uuid4().hex[:12]}"
    sql(pg_url, f"CREATE ROLE {role} LOGIN")
    try:
        sql(pg_url, f"GRANT USAGE ON SCHEMA {old} TO {role}")
        sql(pg_url, f"GRANT ALL ON ALL TABLES IN SCHEMA {old} TO {role}")
        sql(pg_url, f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {old} TO {role}")
        url = with_schema(pg_url.replace("mesh@", f"{role}@", 1), f"{new},{old}")
        home = tmp_path / "home"
        home.mkdir()
        runner = MeshRunner(tmp_path / "unused", home, url=url)
        done = runner.run("register", "alice", "--json")
        no_traceback(done)
        assert done.returncode == 4, done.stdout + done.stderr
        error = json.loads(done.stdout)["error"]
        assert new in error["message"] and "CREATE SCHEMA" in error["message"]
        assert agents_in(pg_url, old) == []
    finally:
        sql(pg_url, f"DROP OWNED BY {role}")
        sql(pg_url, f"DROP ROLE {role}")


# ---- 5. meshes sharing a server do not leak to each other ---------------------------------


def guessable_channel(schema: str, topic: str) -> str:
    """A channel named from the schema alone: what any role on the server can compute."""
    return "mesh_" + hashlib.sha256(f"{schema}\0{topic}".encode()).hexdigest()[:40]


@pytest.fixture
def outsider(pg_url: str) -> Iterator[str]:
    """The URL of a role with no rights on any mesh (it may still log in)."""
    role = f"t_out_{uuid.uuid4().hex[:12]}"
    sql(pg_url, f"CREATE ROLE {role} LOGIN")
    yield pg_url.replace("mesh@", f"{role}@", 1)
    sql(pg_url, f"DROP OWNED BY {role}")
    sql(pg_url, f"DROP ROLE {role}")


def test_an_outsider_cannot_listen_to_a_mesh_by_its_schema_name(
    backend: PostgresBackend, pg_mesh_url: str, outsider: str
) -> None:
    schema = pg_mesh_url.rpartition("%3D")[2]
    register(backend, "bob")
    with psycopg.connect(outsider, autocommit=True) as spy:
        assert spy.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone() == (
            False,
        )
        topics = (inbox("bob"), INBOXES, AGENTS, TASKS, MESH)
        for topic in topics:
            spy.execute(SQL("LISTEN {}").format(Identifier(guessable_channel(schema, topic))))
        with backend.changes.watch(*topics) as watch:
            deliver(backend, message("bob"))
            assert watch.next(5)  # the mesh's own waiter is woken
            heard = [n.payload for n in spy.notifies(timeout=0.5)]
    assert heard == [], "an outsider learnt agent names"
    with backend.transaction() as cur:
        listened = {str(r[0]) for r in cur.execute("SELECT channel FROM mesh_listening")}
    assert not listened  # the watch ended


# (key halves as the guessable keys were made, the operation they would stall)
_GUESSABLE = {
    "listen": ("'drasill-listen'", "{schema}"),
    "agent": ("'drasill-agent:' || '{schema}'", "alice"),
    "watch": ("'drasill-watch:' || '{schema}'", "{host}"),
    "enforce": ("'drasill-mesh-enforce ' || '{schema}'", "{host}"),
}


@pytest.mark.parametrize("stalled", sorted(_GUESSABLE))
def test_an_outsider_holding_a_lock_named_from_the_schema_stalls_nothing(
    backend: PostgresBackend, pg_mesh_url: str, outsider: str, stalled: str
) -> None:
    from drasill_cli.liveness import hostname

    schema = pg_mesh_url.rpartition("%3D")[2]
    first, second = (part.format(schema=schema, host=hostname()) for part in _GUESSABLE[stalled])
    second_sql = second if second.startswith("'") else f"'{second}'"
    register(backend, "bob")

    def operation() -> None:
        if stalled == "listen":
            deliver(backend, message("bob"))
        elif stalled == "agent":
            register(backend, "alice")
        elif stalled == "watch":
            with backend.wake_book.watching(hostname(), {"pid": os.getpid()}):
                pass
        else:
            with backend.budgets.enforcing():
                pass

    done = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            operation()
        except BaseException as exc:
            failed.append(exc)
        finally:
            done.set()

    with psycopg.connect(outsider, autocommit=True) as squatter:
        squatter.execute(f"SELECT pg_advisory_lock(hashtext({first}), hashtext({second_sql}))")
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        finished = done.wait(5)
    worker.join(30)
    assert finished, f"an outsider's advisory lock stalled the mesh ({stalled})"
    assert not failed, failed


def test_a_mesh_from_before_the_id_gains_one_when_opened(pg_url: str, pg_mesh_url: str) -> None:
    from drasill_cli.backends.postgres.schema import MIGRATIONS

    schema = pg_mesh_url.rpartition("%3D")[2]
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
        conn.execute(SQL("SET LOCAL search_path = {}").format(Identifier(schema)))
        for number, migration in enumerate(MIGRATIONS[:2]):
            conn.execute(migration.encode())
            conn.execute(
                "INSERT INTO mesh_schema (version, applied_by) VALUES (%s, 'old')", (number + 1,)
            )
    backend = postgres_backend(pg_mesh_url)
    try:
        mesh_id = backend.changes.mesh_id
        assert len(mesh_id) == 32 and int(mesh_id, 16) >= 0
        assert schema not in backend.changes.announcing(Change(MESH))[0][0]
        with backend.changes.watch(MESH) as watch:
            with backend.db.transaction():
                backend.changes.notify(Change(MESH))
            assert watch.next(5) == {Change(MESH)}
    finally:
        backend.close()
    again = postgres_backend(pg_mesh_url)
    try:
        assert again.changes.mesh_id == mesh_id, "made once, kept"
    finally:
        again.close()


# ---- the fuzzer's finds --------------------------------------------------------------------


def test_a_record_nested_too_deep_for_python_is_quarantined_not_a_traceback(
    pg_cli: MeshRunner, pg_mesh_url: str
) -> None:
    pg_cli.json("register", "alice")
    deep = "[" * 3000 + "1" + "]" * 3000
    sql(
        pg_mesh_url,
        "INSERT INTO mesh_agents (name, host, record, heartbeat)"
        " VALUES ('deep', 'vm', %s::jsonb, now())",
        (deep,),
    )
    done = pg_cli.run("agents", "--json")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert [a["name"] for a in json.loads(done.stdout)] == ["alice"]
    assert ("agents", "deep") in quarantined(pg_mesh_url)
    kept = sql(pg_mesh_url, "SELECT raw::text FROM mesh_quarantine WHERE key = 'deep'")
    assert deep in str(kept[0][0]), "kept whole"


def test_export_skips_records_that_are_not_objects_without_a_traceback(
    pg_cli: MeshRunner, pg_mesh_url: str
) -> None:
    pg_cli.json("register", "alice")
    sql(
        pg_mesh_url,
        "INSERT INTO mesh_agents (name, host, record) VALUES ('textual', 'vm', '\"text\"')",
    )
    sql(
        pg_mesh_url,
        "INSERT INTO mesh_tasks (id, number, state, record)"
        " VALUES ('t-9999', 9999, 'queued', '[]')",
    )
    done = pg_cli.run("export")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in done.stdout.splitlines()]
    assert kinds.count("agent") == 1
    assert "textual" in done.stderr and "t-9999" in done.stderr
