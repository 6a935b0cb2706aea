"""The PostgreSQL mesh's tables: numbered migrations, applied on first use under an advisory lock.

The tables live in the first schema of the connection's search path (created when it does not
exist yet), so several meshes share a database in different schemas
(`?options=-csearch_path%3Dteam_a`). Every name starts with `mesh_`, so a mesh may also live in
a schema that holds other tables. Records cross the boundary as the JSON of `drasill_cli.models`
(validated by `check` before use); the columns beside each `record` are what the database
needs to find, order, lock and expire rows by itself.

A migration is appended, never edited: `MIGRATIONS[n]` brings version n to n + 1.
"""

from __future__ import annotations

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

MIGRATIONS: tuple[str, ...] = (MIGRATION_1, MIGRATION_2)
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
)

# The advisory lock that serialises schema creation and migrations; its second half is the
# schema's name, so meshes in other schemas of the database never wait on it. A session lock,
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
    `db.schema`. Exit 4 when the tables come from a newer drasill-cli."""
    with db.errors_mapped():
        schema, present = _look(conn, db)
        if schema is None or not present:
            wanted = _create_schema(db, conn)
            schema, present = _look(conn)
            if schema != wanted:  # made, yet not usable: the role lacks USAGE on it
                raise MeshUnusable(
                    f"the mesh database at {db.host} does not let this role use schema "
                    f"{wanted}; grant it: GRANT USAGE, CREATE ON SCHEMA {wanted} TO <role>",
                    code="database-privilege-missing",
                )
        db.schema = schema
        version = _version(conn) if present else 0
        if version == LATEST:
            return
        if version > LATEST:
            raise _newer(db, version)
        with _migration_lock(conn, schema), conn.transaction():
            _, present = _look(conn)
            version = _version(conn) if present else 0  # another process may have migrated
            if version > LATEST:
                raise _newer(db, version)
            for number in range(version, LATEST):
                conn.execute(MIGRATIONS[number].encode())
                conn.execute(
                    "INSERT INTO mesh_schema (version, applied_by) VALUES (%s, %s)",
                    (number + 1, __version__),
                )


def _look(conn: psycopg.Connection[Any], db: Database | None = None) -> tuple[str | None, bool]:
    """The current schema and whether the mesh's version table is in it; with `db`, the
    server's clock too (`db.clock_offset`: its time minus this host's, read mid-round-trip)."""
    before = time.time()
    row = conn.execute(
        "SELECT current_schema(),"
        " to_regclass(quote_ident(current_schema()) || '.mesh_schema') IS NOT NULL,"
        " extract(epoch FROM clock_timestamp())::float8"
    ).fetchone()
    after = time.time()
    assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
    if db is not None:
        db.clock_offset = float(row[2]) - (before + after) / 2
    return row[0], bool(row[1])


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM mesh_schema").fetchone()
    return int(row[0]) if row else 0


def _create_schema(db: Database, conn: psycopg.Connection[Any]) -> str:
    """The first schema of the search path, created when it does not exist yet."""
    from psycopg import sql

    row = conn.execute("SHOW search_path").fetchone()
    wanted = first_search_path_schema(row[0] if row else "")
    current = conn.execute("SELECT current_schema()").fetchone()
    if wanted is None or (current is not None and current[0] == wanted):
        if current is None or current[0] is None:
            raise MeshUnusable(
                f"the mesh database at {db.host} has no schema on the search path; create one "
                "or name it in the URL: ?options=-csearch_path%3DNAME",
                code="database-no-schema",
            )
        return str(current[0])
    with _migration_lock(conn, wanted):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wanted)))
    return wanted


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
        schema, present = _look(conn, db)
        db.schema, db.present = schema, present
        if not present:
            return
        version = _version(conn)
    if version > LATEST:
        raise _newer(db, version)
    if version < LATEST:
        raise MeshUnusable(
            f"the mesh database at {db.host} holds tables of version {version} of {LATEST}; "
            "any command that writes brings them up to date (e.g. mesh status)",
            code="database-not-migrated",
        )
