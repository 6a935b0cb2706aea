"""`Maintenance` for a PostgreSQL mesh: the sweep (listener rows of waiters whose session is
gone, and old rows of `mesh_ops`: every write is a transaction, so a killed writer leaves
nothing half-done), and the database's part of `mesh doctor`.

The checks, in order: the database reachable with its tables current (the URL masked), the
server's version, whether it takes writes (not a standby, sessions not read-only), the role's
privileges on the schema and the tables, the round-trip time, the clock skew between this host
and the server, whether LISTEN/NOTIFY works on this connection (a transaction pooler such as
pgbouncer in transaction mode breaks it), and quarantined rows.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.schema import LATEST, TABLES
from drasill_cli.errors import MeshError
from drasill_cli.storage.maintenance import Finding

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

# The oldest server the mesh is tested on.
MIN_SERVER = 13
# Round trips timed, and the median above which doctor warns (ms).
PINGS = 5
SLOW_MS = 50.0
# Clock skew above which doctor warns (s): the mesh reads the server's clock on every host (the
# offset is measured when a process connects), but the host's other programs and its logs do not.
SKEW_S = 2.0
# How long the pooler probe waits for its own notification.
PROBE_WAIT_S = 2.0
DML = "SELECT, INSERT, UPDATE, DELETE"
# The listener rows of sessions that are gone: removed (prune), or only listed (a dry run).
_GONE_LISTENERS = {
    True: "DELETE FROM mesh_listening WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)"
    " RETURNING pid",
    False: "SELECT pid FROM mesh_listening WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)",
}


class PostgresMaintenance:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    def sweep(self, older_than: float, *, apply: bool = True) -> list[str]:
        """The listener rows (`mesh_listening`) of sessions that are gone: a waiter killed
        while waiting leaves its rows, and writers keep announcing to their channels. A killed
        writer leaves nothing else: its transaction rolled back whole. With `apply`, the rows
        of operations done more than a day ago go too (`sweep`: kept only so that a retry
        after a lost connection finds its first try's outcome; not reported)."""
        del older_than  # a session is gone or not; its age says nothing more
        if apply and not self.backend.read_only:
            from drasill_cli.backends.postgres.ops import sweep

            with self.backend.transaction() as cur:
                sweep(cur)
        rows = self.backend.statement(_GONE_LISTENERS[apply])
        sessions = sorted({int(pid) for (pid,) in rows})
        return [f"listener rows of ended database session {pid}" for pid in sessions]

    def check(self) -> list[Finding]:
        db = self.backend.db
        try:
            with self.backend.transaction() as cur:
                cur.execute("SELECT coalesce(max(version), 0) FROM mesh_schema")
                row = cur.fetchone()
                version = int(row[0]) if row else 0
        except MeshError as exc:
            fix = exc.message.rpartition("; ")[2] if "; " in exc.message else "see the message"
            return [Finding("mesh-database", "fail", exc.message, fix, required=True)]
        where = f"{db.masked} (server {db.host}, schema {self.backend.changes.schema})"
        found = [
            Finding(
                "mesh-database",
                "ok",
                f"reachable, tables current (version {version} of {LATEST}): {where}",
                required=True,
            )
        ]
        for probe in (
            self._server,
            self._writable,
            self._privileges,
            self._latency,
            self._clock,
            self._pooler,
            self._quarantine,
        ):
            try:
                found.append(probe())
            except MeshError as exc:
                name = probe.__name__.lstrip("_")
                found.append(Finding(f"database-{name}", "warn", exc.message, "run it again"))
        return found

    def _server(self) -> Finding:
        with self.backend.transaction() as cur:
            cur.execute("SELECT current_setting('server_version'), version()")
            row = cur.fetchone()
            cur.execute("SELECT current_setting('server_version_num')::int")
            number = cur.fetchone()
        shown = str(row[0]) if row else "unknown"
        major = int(number[0]) // 10000 if number else 0
        if major < MIN_SERVER:
            return Finding(
                "database-server",
                "warn",
                f"PostgreSQL {shown}: older than {MIN_SERVER}, the oldest the mesh is tested on",
                f"upgrade the server to PostgreSQL {MIN_SERVER} or newer",
            )
        return Finding("database-server", "ok", f"PostgreSQL {shown}")

    def _writable(self) -> Finding:
        """Whether the server takes writes: not a standby, sessions not read-only by default."""
        with self.backend.db.transaction() as cur:
            cur.execute(
                "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'),"
                " current_user"
            )
            row = cur.fetchone()
        assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
        standby, read_only, user = bool(row[0]), str(row[1]) == "on", str(row[2])
        if standby:
            return Finding(
                "database-writable",
                "fail",
                "the server is a standby (in recovery): it accepts no writes",
                "point the URL at the primary server",
                required=True,
            )
        if read_only:
            return Finding(
                "database-writable",
                "fail",
                f"sessions of role {user} are read-only (default_transaction_read_only = on, "
                "set for the role, the database or in the URL's options)",
                f"ALTER ROLE {user} SET default_transaction_read_only = off, or remove it from "
                "the URL's options",
                required=True,
            )
        return Finding("database-writable", "ok", "the server accepts writes", required=True)

    def _privileges(self) -> Finding:
        schema = self.backend.changes.schema
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT current_user, has_schema_privilege(%s, 'USAGE'),"
                " has_schema_privilege(%s, 'CREATE')",
                (schema, schema),
            )
            row = cur.fetchone()
            assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
            user, usage, create = str(row[0]), bool(row[1]), bool(row[2])
            cur.execute(  # one privilege at a time: a list asks whether ANY is held
                "SELECT string_agg(p, ', ' ORDER BY o), t FROM unnest(%s::text[]) AS t,"
                " unnest(%s::text[]) WITH ORDINALITY AS q(p, o) WHERE NOT has_table_privilege("
                " quote_ident(%s) || '.' || quote_ident(t), p) GROUP BY t ORDER BY t",
                (list(TABLES), DML.split(", "), schema),
            )
            lacking: dict[str, list[str]] = {}
            for privileges, table in cur.fetchall():
                lacking.setdefault(privileges, []).append(table)
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'S' AND c.relname LIKE 'mesh\\_%%'"
                " AND CASE WHEN c.relkind = 'S'"  # never asked of a table: it would be an error
                " THEN NOT has_sequence_privilege(c.oid, 'USAGE') END",
                (schema,),
            )
            sequences = [r[0] for r in cur.fetchall()]
        missing = []
        if not usage:
            missing.append(f"USAGE on schema {schema}")
        missing += [f"{privileges} on {', '.join(t)}" for privileges, t in lacking.items()]
        if sequences:
            missing.append(f"USAGE on sequences {', '.join(sequences)}")
        if missing:
            return Finding(
                "database-privileges",
                "fail",
                f"role {user} lacks {'; '.join(missing)}",
                f"as the tables' owner: GRANT USAGE ON SCHEMA {schema} TO {user}; GRANT {DML} "
                f"ON ALL TABLES IN SCHEMA {schema} TO {user}; GRANT USAGE ON ALL SEQUENCES IN "
                f"SCHEMA {schema} TO {user}",
                required=True,
            )
        if not create:
            return Finding(
                "database-privileges",
                "warn",
                f"role {user} may use every mesh table, but not CREATE in schema {schema}: a "
                "newer drasill-cli could not migrate the tables",
                f"GRANT CREATE ON SCHEMA {schema} TO {user} (or migrate as the tables' owner)",
                required=True,
            )
        return Finding(
            "database-privileges",
            "ok",
            f"role {user}: USAGE and CREATE on schema {schema}, {DML} on every mesh table",
            required=True,
        )

    def _latency(self) -> Finding:
        times = []
        with self.backend.transaction() as cur:
            for _ in range(PINGS):
                started = time.perf_counter()
                cur.execute("SELECT 1")
                cur.fetchone()
                times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        detail = f"round trip {median:.1f} ms (median of {PINGS})"
        if median > SLOW_MS:
            return Finding(
                "database-latency",
                "warn",
                f"{detail}: every command waits for several round trips",
                "run the database closer to the hosts (same region or network)",
            )
        return Finding("database-latency", "ok", detail)

    def _clock(self) -> Finding:
        with self.backend.transaction() as cur:
            before = time.time()
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            row = cur.fetchone()
            after = time.time()
        server = float(row[0]) if row else (before + after) / 2
        skew = server - (before + after) / 2
        side = "ahead of" if skew > 0 else "behind"
        detail = f"the server's clock is {abs(skew):.3f} s {side} this host's"
        if abs(skew) > SKEW_S:
            return Finding(
                "database-clock",
                "warn",
                f"{detail}: mesh commands read the server's clock, so leases and stamps agree "
                "across hosts, but this host's other programs, file times and logs do not",
                "synchronise the clocks of this host and the server (NTP: chrony or "
                "systemd-timesyncd)",
            )
        return Finding("database-clock", "ok", detail)

    def _pooler(self) -> Finding:
        """Two connections of ours on one server process, or LISTEN then NOTIFY on one
        connection that does not hear itself: a pooler hands server sessions around between
        transactions (an idle pool gives both connections the same one), which breaks LISTEN.
        A direct connection is its own server process, and hears its own notification."""
        from psycopg import sql

        db = self.backend.db
        probe = f"mesh_probe_{uuid.uuid4().hex}"
        conn: psycopg.Connection[Any] = db.connect()
        other: psycopg.Connection[Any] | None = None
        try:
            with db.errors_mapped():
                first = conn.execute("SELECT pg_backend_pid()").fetchone()
                other = db.connect()
                beside = other.execute("SELECT pg_backend_pid()").fetchone()
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(probe)))
                conn.execute("SELECT pg_notify(%s, 'probe')", (probe,))
                notes = list(conn.notifies(timeout=PROBE_WAIT_S, stop_after=1))
                second = conn.execute("SELECT pg_backend_pid()").fetchone()
        finally:
            conn.close()
            if other is not None:
                other.close()
        if first == beside:
            why = "two connections of ours were served by one server process"
        elif not notes:
            why = "the probe's notification never came back"
        elif first != second:
            why = "two statements ran in different server processes"
        else:
            return Finding(
                "database-pooler",
                "ok",
                "LISTEN/NOTIFY works on this connection (no transaction pooler between): "
                "waits wake on changes from any host",
            )
        return Finding(
            "database-pooler",
            "warn",
            f"{why}: the connection seems to go through a transaction pooler (such as "
            "pgbouncer with pool_mode = transaction), which breaks LISTEN, so waits only wake "
            "on their slow re-check",
            "connect to the server directly, or through a session-mode pool (pgbouncer "
            "pool_mode = session)",
        )

    def _quarantine(self) -> Finding:
        """Rows set aside in `mesh_quarantine`, and attachment rows still in place that would
        be (a digest or a name that is not one, content that no longer hashes to its digest:
        each would be quarantined with its message when read)."""
        from drasill_cli.backends.postgres.attachments import row_problem

        with self.backend.transaction() as cur:
            cur.execute("SELECT kind, count(*) FROM mesh_quarantine GROUP BY kind ORDER BY kind")
            rows = cur.fetchall()
            cur.execute(
                "SELECT message_id, name, sha256,"
                " sha256 ~ '^[0-9a-f]{64}$' AND encode(sha256(data), 'hex') = sha256"
                ' FROM mesh_attachments ORDER BY message_id COLLATE "C", name COLLATE "C"'
            )
            damaged = [
                f"{msg_id}/{name} ({why})"
                for msg_id, name, sha, sound in cur.fetchall()
                if (
                    why := row_problem(msg_id, name, sha)
                    or (None if sound else "its content does not match its sha256")
                )
            ]
        if not rows and not damaged:
            return Finding("database-quarantine", "ok", "no quarantined or damaged rows")
        said = []
        if rows:
            counts = ", ".join(f"{n} {kind}" for kind, n in rows)
            said.append(f"damaged rows were set aside in mesh_quarantine: {counts}")
        if damaged:
            shown = "; ".join(damaged[:5]) + (
                f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
            )
            said.append(
                f"{len(damaged)} damaged attachment rows are still in place (set aside with "
                f"their messages when read): {shown}"
            )
        return Finding(
            "database-quarantine",
            "warn",
            "; ".join(said),
            "read them (SELECT * FROM mesh_quarantine; the attachment rows named) and delete "
            "them when understood",
        )
