"""The PostgreSQL mesh's tables: numbered migrations, applied on first use under an advisory lock.

The tables live in the first schema of the connection's search path (created when it does not
exist yet, never skipped for the next one), so several meshes share a database in different
schemas
(`?options=-csearch_path%3Dteam_a`). Every name starts with `mesh_`, so a mesh may also live in
a schema that holds other tables. Records cross the boundary as the JSON of `drasill_cli.models`
(validated by `check` before use); the columns beside each `record` are what the database
needs to find, order, lock and expire rows by itself.

A migration is appended, never edited: `MIGRATIONS[n]` brings version n to n + 1.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from drasill_cli import __version__
from drasill_cli.errors import MeshUnusable

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres.connection import Database

# The largest attachment the table itself accepts, whatever the config says (bytea holds 1 GB;
# `[messages] max_attachment_bytes` is the limit the backend enforces before it writes).
ATTACHMENT_HARD_LIMIT = 256 * 1024 * 1024

MIGRATION_1 = """
CREATE TABLE mesh_schema (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL               -- the drasill-cli version that applied it
);

-- Whole-table guards: `SELECT ... FROM mesh_guards WHERE name = %s FOR UPDATE` serialises the
-- operations that decide on a whole table (the lock table, budgets, wake state, task numbers).
CREATE TABLE mesh_guards (name text PRIMARY KEY);
INSERT INTO mesh_guards (name) VALUES ('locks'), ('budgets'), ('wake'), ('tasks');

-- Presence: one row per registered agent. `host` is the machine it registered from (pids and
-- sessions are only checked there); `heartbeat` is its last sign of life, by the database clock
-- (NULL until the first: a record stored without a beat has no heartbeat yet).
CREATE TABLE mesh_agents (
    name        text PRIMARY KEY,
    host        text NOT NULL,
    record      jsonb NOT NULL,              -- models.AgentRecord
    heartbeat   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mesh_agents_host ON mesh_agents (host);

-- Mailbox: one row per delivered copy (a broadcast makes one per recipient, sharing `id`).
-- Take next: the first unread row by (rank, created, id), FOR UPDATE SKIP LOCKED, set to read.
-- `created` is the time in the message id (so take order, newest-first listings and expiry all
-- follow the id, as in the directory mesh); ids compare byte-wise (COLLATE "C"). Bodies are
-- `json`, not `jsonb`: kept as written (key order, any string a message may hold).
CREATE TABLE mesh_messages (
    copy        bigserial PRIMARY KEY,
    id          text COLLATE "C" NOT NULL,   -- the message id (sorts in creation order)
    recipient   text NOT NULL,
    state       text NOT NULL DEFAULT 'unread'
                CHECK (state IN ('unread', 'read', 'archived')),
    rank        smallint NOT NULL DEFAULT 1, -- 0 urgent, 1 normal: taken first to last
    created     timestamptz NOT NULL DEFAULT now(),
    changed     timestamptz NOT NULL DEFAULT now(),  -- when `state` last changed (retention)
    body        json NOT NULL,               -- models.MessageRecord
    UNIQUE (recipient, id)
);
CREATE INDEX mesh_messages_unread ON mesh_messages (recipient, rank, created, id)
    WHERE state = 'unread';
CREATE INDEX mesh_messages_listed ON mesh_messages (recipient, state, id);
CREATE INDEX mesh_messages_id ON mesh_messages (id);
CREATE INDEX mesh_messages_retention ON mesh_messages (state, created);

-- The senders' history: one row per message sent.
CREATE TABLE mesh_sent (
    sender      text NOT NULL,
    id          text COLLATE "C" NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),  -- the time in the id, as above
    body        json NOT NULL,               -- models.MessageRecord as sent
    PRIMARY KEY (sender, id)
);
CREATE INDEX mesh_sent_created ON mesh_sent (created);
CREATE INDEX mesh_sent_id ON mesh_sent (id);

-- Attachments: the bytes of each message's files (a reader on any host copies them into its
-- private local cache and gives that path). `sha256` is the digest of `data` itself (computed
-- when stored; the cache is keyed and checked by it).
CREATE TABLE mesh_attachments (
    message_id  text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0 AND size <= 268435456),  -- ATTACHMENT_HARD_LIMIT
    sha256      text NOT NULL,
    data        bytea NOT NULL CHECK (octet_length(data) = size),
    created     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, name)
);
CREATE INDEX mesh_attachments_content ON mesh_attachments (sha256);

-- Task board: numbered tasks (t-0007 from the sequence); the claim takes the first open task
-- by (priority desc, number) FOR UPDATE SKIP LOCKED.
CREATE SEQUENCE mesh_task_numbers;
CREATE TABLE mesh_tasks (
    id          text PRIMARY KEY,            -- t-0007
    number      bigint NOT NULL UNIQUE,
    state       text NOT NULL,
    priority    integer NOT NULL DEFAULT 0,
    claimed_by  text,
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now(),
    record      jsonb NOT NULL               -- models.Task
);
CREATE INDEX mesh_tasks_queue ON mesh_tasks (state, priority DESC, number);
CREATE INDEX mesh_tasks_held ON mesh_tasks (claimed_by) WHERE claimed_by IS NOT NULL;

-- The lock table: one row per (key, holder). `key` is the lock's path key (repository and
-- relative path inside a git work tree); leases end by the database clock.
CREATE TABLE mesh_locks (
    key         text NOT NULL,
    holder      text NOT NULL,
    mode        text NOT NULL,
    renewed     timestamptz NOT NULL DEFAULT now(),
    record      jsonb NOT NULL,              -- models.LockRecord
    PRIMARY KEY (key, holder)
);
CREATE INDEX mesh_locks_holder ON mesh_locks (holder);

-- Budgets: who hardware enforcement warned or paused, on which host (an agent may be both:
-- one row per state). Admission holds the guard row 'budgets'; an enforcement pass holds an
-- advisory lock keyed by the schema and its host.
CREATE TABLE mesh_budgets (
    agent       text NOT NULL,
    state       text NOT NULL CHECK (state IN ('warned', 'paused')),
    host        text NOT NULL,              -- the host whose enforcement wrote it
    updated     timestamptz NOT NULL DEFAULT now(),
    record      jsonb NOT NULL,
    PRIMARY KEY (agent, state)
);

-- Wake book: per-agent wake state, and one `mesh watch` per host (its guard row).
CREATE TABLE mesh_wake (
    agent       text PRIMARY KEY,
    host        text NOT NULL,
    updated     timestamptz NOT NULL DEFAULT now(),
    record      jsonb NOT NULL
);
CREATE TABLE mesh_watchers (
    host        text PRIMARY KEY,
    started     timestamptz NOT NULL DEFAULT now(),
    heartbeat   timestamptz NOT NULL DEFAULT now(),
    record      jsonb NOT NULL               -- pid, pid start time, version
);

-- The audit log: append-only, in commit order of `seq`.
CREATE TABLE mesh_audit (
    seq         bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    actor       text,
    host        text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX mesh_audit_at ON mesh_audit (at);

-- Quarantine: stored records that failed their check, kept aside (never returned).
CREATE TABLE mesh_quarantine (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,               -- agents, messages, tasks, locks, ...
    key         text NOT NULL,
    reason      text NOT NULL,
    raw         jsonb
);
"""

MIGRATION_2 = """
-- Who listens on which notification channel: one row per channel of a watch's connection (its
-- server process id). A change is announced only on channels that have a row (connection.py,
-- `Database.announce`), so a write nobody waits for costs no NOTIFY. A watch LISTENs, adds its
-- rows and takes the listeners' lock (below) in one transaction, and deletes its rows when it
-- ends; the rows of a session that died (a needless notification each) go when the next watch
-- starts.
CREATE TABLE mesh_listening (
    channel     text NOT NULL,
    pid         integer NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, pid)
);

-- The channels of `channels` someone listens on, asked by a write from inside its own statement
-- (connection.py, `Database.statement`). It takes the mesh's listeners' lock in share mode,
-- held to the writer's commit, then reads with a snapshot of its own (PL/pgSQL, VOLATILE: each
-- query sees what was committed when it started). A watch takes that lock exclusively in the
-- transaction that adds its rows: a writer that looked before has committed before the watch's
-- first look at the tables, and one that looks after sees the watch's rows. NULL asks nothing
-- and takes no lock (a statement inside a longer transaction, which announces after its commit
-- and must not hold the lock, and so every waiter's start, for that long).
CREATE FUNCTION mesh_listened(channels text[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF channels IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtext('drasill-listen'), hashtext(current_schema()));
    RETURN ARRAY(SELECT DISTINCT l.channel FROM mesh_listening AS l
                 WHERE l.channel = ANY(channels));
END
$$;
"""

MIGRATION_3 = """
-- The mesh's own id: 128 random bits (two random UUIDs hashed), made once with the tables and
-- readable only by roles with rights on them. Advisory locks and notification channels are
-- database-wide, so they are keyed by this id (`mesh_key`, `changes.channel`), never by the
-- schema's name: a role with no rights on the mesh cannot hold them or listen in.
CREATE TABLE mesh_identity (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    single      boolean NOT NULL DEFAULT true UNIQUE CHECK (single)
);
INSERT INTO mesh_identity (id) VALUES (md5(gen_random_uuid()::text || gen_random_uuid()::text));

-- As in MIGRATION_2, with the listeners' lock keyed by the mesh's id (`mesh_key(id, 'listen')`).
CREATE OR REPLACE FUNCTION mesh_listened(channels text[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF channels IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(
        ('x' || left(encode(sha256(convert_to(i.id || ':listen:', 'UTF8')), 'hex'), 16))
        ::bit(64)::bigint) FROM mesh_identity AS i;
    RETURN ARRAY(SELECT DISTINCT l.channel FROM mesh_listening AS l
                 WHERE l.channel = ANY(channels));
END
$$;
"""

MIGRATION_4 = """
-- Operations done (issue 23 point 6): a write that must not happen twice writes its row here,
-- keyed by an id its client chose, in the transaction that does it, before anything else (a
-- second try of the same operation waits on the first's row and then finds it), and its
-- outcome when it commits. A client whose connection was lost as the first try committed runs
-- it again under the same id and gets the first outcome back instead of doing it twice. Rows
-- older than a day go at `mesh prune` (ops.py, `OPS_KEPT`): a retry comes within seconds.
CREATE TABLE mesh_ops (
    op          text COLLATE "C" PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    outcome     jsonb
);
CREATE INDEX mesh_ops_at ON mesh_ops (at);
"""

MIGRATIONS: tuple[str, ...] = (MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4)
LATEST = len(MIGRATIONS)

# Tables of the mesh (for doctor, export and tests).
TABLES = (
    "mesh_schema",
    "mesh_guards",
    "mesh_agents",
    "mesh_messages",
    "mesh_sent",
    "mesh_attachments",
    "mesh_tasks",
    "mesh_locks",
    "mesh_budgets",
    "mesh_wake",
    "mesh_watchers",
    "mesh_audit",
    "mesh_quarantine",
    "mesh_listening",
    "mesh_identity",
    "mesh_ops",
)

_MESH_ID_RE = re.compile(r"[0-9a-f]{32}")


def mesh_key(mesh_id: str, purpose: str, part: str = "") -> int:
    """The advisory-lock key (a bigint) of `purpose` (and `part`: a host, an agent's name) in
    the mesh of `mesh_id`: the first 8 bytes of SHA-256 of `ID:PURPOSE:PART`, as MIGRATION_3's
    `mesh_listened` computes it in SQL. Not guessable without the id."""
    digest = hashlib.sha256(f"{mesh_id}:{purpose}:{part}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# The advisory lock that serialises schema creation and migrations; its second half is the
# schema's name, so meshes in other schemas of the database never wait on it. (The one lock
# keyed by a name anyone can guess: taken before the mesh, and so its id, exists, and only when
# a schema is made or migrated; see docs/howto-multi-host.md, "A shared server".) A session lock,
# taken outside the transaction it guards: a transaction that starts after the wait sees the
# catalog as the previous holder left it (one that waited inside could keep a stale view and
# try to create the tables again).
_LOCK = "pg_advisory_lock(hashtext('drasill-mesh-migrate'), hashtext(%s))"


@contextmanager
def _migration_lock(conn: psycopg.Connection[Any], schema: str) -> Iterator[None]:
    conn.execute(f"SELECT {_LOCK}", (schema,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute(f"SELECT {_LOCK.replace('_lock(', '_unlock(', 1)}", (schema,))


def first_search_path_schema(search_path: str) -> str | None:
    """The first schema `search_path` names, as PostgreSQL reads it (None for `$user`)."""
    first = search_path.split(",", maxsplit=1)[0].strip()
    if not first or first in ('"$user"', "$user"):
        return None
    if first.startswith('"') and first.endswith('"'):
        return first[1:-1].replace('""', '"')
    return first.lower()


def ensure_schema(db: Database, conn: psycopg.Connection[Any]) -> None:
    """Make the mesh's tables on first use, or bring them to the latest version; sets
    `db.schema`. Exit 4 when the tables come from a newer drasill-cli.

    The mesh's schema is the first entry of the search path, resolved here, never skipped: a
    first schema that does not exist is created (or refused, exit 4, naming it), where
    PostgreSQL itself would silently fall back to the next entry and so to another mesh. Only
    a first entry of `$user` is left to PostgreSQL (the default `"$user", public`). Every
    connection of one `Database` must resolve to the same schema."""
    with db.errors_mapped():
        schema, present, search_path = _look(conn, db)
        wanted = first_search_path_schema(search_path)
        if wanted is not None and schema != wanted:
            _create_schema(db, conn, wanted)
            schema, present, _ = _look(conn)
            if schema != wanted:  # there, yet not usable: the role lacks USAGE on it
                raise MeshUnusable(
                    f"the mesh database at {db.host} does not let this role use schema "
                    f"{wanted}; grant it: GRANT USAGE, CREATE ON SCHEMA {wanted} TO <role>",
                    code="database-privilege-missing",
                )
        if schema is None:
            raise MeshUnusable(
                f"the mesh database at {db.host} has no schema on the search path; create one "
                "or name it in the URL: ?options=-csearch_path%3DNAME",
                code="database-no-schema",
            )
        if db.schema is not None and db.schema != schema:
            raise MeshUnusable(
                f"a new connection to the mesh database at {db.host} found schema {schema}, not "
                f"{db.schema} as before (a schema was made or dropped meanwhile); name the "
                "schema first in the URL's search_path and run the command again",
                code="database-schema-moved",
            )
        db.schema = schema
        version, mesh_id = _stamp(conn) if present else (0, None)
        if version > LATEST:
            raise _newer(db, version)
        if version < LATEST:
            with _migration_lock(conn, schema), conn.transaction():
                _, present, _ = _look(conn)
                version = _version(conn) if present else 0  # another process may have migrated
                if version > LATEST:
                    raise _newer(db, version)
                for number in range(version, LATEST):
                    conn.execute(MIGRATIONS[number].encode())
                    conn.execute(
                        "INSERT INTO mesh_schema (version, applied_by) VALUES (%s, %s)",
                        (number + 1, __version__),
                    )
                mesh_id = _mesh_id(conn)
        db.mesh_id = _checked_id(db, schema, mesh_id)


def _look(
    conn: psycopg.Connection[Any], db: Database | None = None
) -> tuple[str | None, bool, str]:
    """The current schema, whether the mesh's version table is in it, and the search path;
    with `db`, the server's clock too (`db.clock_offset`: its time minus this host's, read
    mid-round-trip)."""
    before = time.time()
    row = conn.execute(
        "SELECT current_schema(),"
        " to_regclass(quote_ident(current_schema()) || '.mesh_schema') IS NOT NULL,"
        " extract(epoch FROM clock_timestamp())::float8, current_setting('search_path')"
    ).fetchone()
    after = time.time()
    assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
    if db is not None:
        db.clock_offset = float(row[2]) - (before + after) / 2
    return row[0], bool(row[1]), str(row[3] or "")


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM mesh_schema").fetchone()
    return int(row[0]) if row else 0


def _mesh_id(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT min(id) FROM mesh_identity").fetchone()
    return row[0] if row else None


def _stamp(conn: psycopg.Connection[Any]) -> tuple[int, Any]:
    """The tables' version and the mesh's id in one round trip (outside a transaction); a mesh
    from before MIGRATION_3 has no id yet (it is made by the migration)."""
    import psycopg

    try:
        row = conn.execute(
            "SELECT (SELECT coalesce(max(version), 0) FROM mesh_schema),"
            " (SELECT min(id) FROM mesh_identity)"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return _version(conn), None
    return (int(row[0]), row[1]) if row else (0, None)


def _checked_id(db: Database, schema: str, mesh_id: Any) -> str:
    """The mesh's id as read, or exit 4 when its row is missing or damaged (the id keys every
    advisory lock and channel: a made-up one would split the mesh's waiters and locks)."""
    if isinstance(mesh_id, str) and _MESH_ID_RE.fullmatch(mesh_id):
        return mesh_id
    raise MeshUnusable(
        f"the mesh in schema {schema} of the database at {db.host} has no usable id (the row "  # noqa: S608 -- a message naming a statement to run, not a query
        "of mesh_identity is missing or damaged); stop every mesh watch, then as the tables' "
        "owner give it a new one: DELETE FROM mesh_identity, and INSERT INTO mesh_identity "
        "(id) VALUES (md5(gen_random_uuid()::text))",
        code="database-mesh-id-missing",
    )


def _create_schema(db: Database, conn: psycopg.Connection[Any], wanted: str) -> None:
    """Schema `wanted` (the first of the search path) created when it does not exist yet; exit
    4 naming it when this role may not create it."""
    import psycopg
    from psycopg import sql

    there = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (wanted,)).fetchone()
    if there is not None:  # there but not usable (no USAGE): the caller says so
        return
    try:
        with _migration_lock(conn, wanted):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wanted)))
    except psycopg.errors.InsufficientPrivilege:
        user = conn.info.user
        raise MeshUnusable(
            f"schema {wanted}, first on the search path of the mesh database at {db.host}, "
            f"does not exist and role {user} may not create it; create it as a role that may: "
            f"CREATE SCHEMA {wanted} AUTHORIZATION {user} (or grant CREATE ON DATABASE), or "
            "name an existing schema first in the URL: ?options=-csearch_path%3DNAME",
            code="database-schema-missing",
        ) from None


def _newer(db: Database, version: int) -> MeshUnusable:
    return MeshUnusable(
        f"the mesh database at {db.host} holds tables of version {version}, newer than this "
        f"drasill-cli knows ({LATEST}); upgrade drasill-cli on this host",
        code="database-newer",
    )


def inspect_schema(db: Database, conn: psycopg.Connection[Any]) -> None:
    """For a read-only opening (completion): the mesh's tables as they are, never made nor
    migrated; sets `db.schema` and `db.present` (whether the tables exist). Exit 4 when they
    exist at another version than this drasill-cli's (a writing command migrates older ones)."""
    with db.errors_mapped():
        schema, present, search_path = _look(conn, db)
        wanted = first_search_path_schema(search_path)
        if wanted is not None and schema != wanted:
            # The first schema is missing (or not usable): no mesh here yet, and never the
            # one PostgreSQL would fall back to.
            db.schema, db.present = wanted, False
            return
        db.schema, db.present = schema, present
        if not present:
            return
        version, mesh_id = _stamp(conn)
        if version == LATEST:
            db.mesh_id = _checked_id(db, str(schema), mesh_id)
    if version > LATEST:
        raise _newer(db, version)
    if version < LATEST:
        raise MeshUnusable(
            f"the mesh database at {db.host} holds tables of version {version} of {LATEST}; "
            "any command that writes brings them up to date (e.g. mesh status)",
            code="database-not-migrated",
        )
