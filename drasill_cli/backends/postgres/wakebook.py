"""`WakeBook` for a PostgreSQL mesh: `mesh_wake` rows per agent, and one `mesh watch` per host.

A watcher types into the sessions of its own host only, so each host runs its own: the guard is
a session advisory lock keyed by the mesh's id and the host (`mesh_key`), held on a connection
of the watcher's own for the whole block, so it dies with the process (or its connection) and a
killed watcher never blocks the next one. Its `mesh_watchers` row names the holder for those
refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.backends.postgres.quarantine import quarantine
from drasill_cli.backends.postgres.schema import mesh_key
from drasill_cli.storage.wakebook import AlreadyWatching

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend


class PostgresWakeBook:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    def load(self, agent: str) -> dict[str, Any] | None:
        with self.backend.transaction() as cur:
            cur.execute("SELECT record FROM mesh_wake WHERE agent = %s", (agent,))
            row = cur.fetchone()
            if row is None:
                return None
            if not isinstance(row[0], dict):
                reason = "is not a JSON object"
                quarantine(
                    self.backend, cur, table="mesh_wake", column="agent", key=agent, reason=reason
                )
                return None
            return row[0]

    def save(self, agent: str, state: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        with self.backend.transaction() as cur:
            cur.execute(
                "INSERT INTO mesh_wake (agent, host, record) VALUES (%s, %s, %s)"
                " ON CONFLICT (agent) DO UPDATE SET host = EXCLUDED.host,"
                " record = EXCLUDED.record, updated = now()",
                (agent, liveness.hostname(), Jsonb(state)),
            )

    def forget(self, agent: str) -> None:
        with self.backend.transaction() as cur:
            cur.execute("DELETE FROM mesh_wake WHERE agent = %s", (agent,))

    def agents(self) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute("SELECT agent FROM mesh_wake")
            return sorted(row[0] for row in cur.fetchall())

    def _holder(self, host: str) -> dict[str, Any]:
        with self.backend.transaction() as cur:
            cur.execute("SELECT record FROM mesh_watchers WHERE host = %s", (host,))
            row = cur.fetchone()
        return row[0] if row is not None and isinstance(row[0], dict) else {}

    @contextlib.contextmanager
    def watching(self, host: str, holder: dict[str, Any]) -> Iterator[_HostGuard]:
        guard = _HostGuard(self, host, holder)
        try:
            guard.take()
            yield guard
            guard.release()
        finally:
            guard.close()  # ends the session: a lock still held (a failure above) goes with it


class _HostGuard:
    """The session advisory lock of (mesh id, host) on a connection of its own (the lock lives
    as long as that session), and the `mesh_watchers` row naming its holder."""

    def __init__(self, book: PostgresWakeBook, host: str, holder: dict[str, Any]) -> None:
        self.book = book
        self.host = host
        self.holder = holder
        self.conn: psycopg.Connection[Any] | None = None

    def take(self) -> None:
        """Connect and take the lock, or `AlreadyWatching` naming who holds it."""
        from psycopg.types.json import Jsonb

        db = self.book.backend.db
        key = self._key()
        self.close()
        self.conn = conn = db.connect()
        try:
            with db.errors_mapped():
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                taken = row.fetchone()
                if taken and taken[0]:
                    conn.execute(
                        "INSERT INTO mesh_watchers (host, record) VALUES (%s, %s)"
                        " ON CONFLICT (host) DO UPDATE SET record = EXCLUDED.record,"
                        " started = now(), heartbeat = now()",
                        (self.host, Jsonb(self.holder)),
                    )
        except BaseException:
            self.close()  # never a session of ours left open without the lock
            raise
        if not (taken and taken[0]):
            self.close()
            raise AlreadyWatching(self.book._holder(self.host))

    def confirm(self) -> None:
        """The session still alive (its heartbeat noted), or the lock taken again on a new one:
        a cut session (a server restart) took the lock with it, and another watcher of this
        host may have started meanwhile."""
        import psycopg

        if self.conn is not None and not self.conn.closed:
            try:
                held = self.conn.execute(
                    "UPDATE mesh_watchers SET heartbeat = now() WHERE host = %s AND EXISTS ("
                    " SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    "  AND pid = pg_backend_pid()) RETURNING 1",
                    (self.host,),
                ).fetchone()
                if held is not None:
                    return
            except psycopg.Error:
                pass  # cut: take it again below
        self.take()

    def release(self) -> None:
        """Give the guard back; a session already cut (its lock gone with it) is fine."""
        import psycopg

        conn = self.conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute("DELETE FROM mesh_watchers WHERE host = %s", (self.host,))
            # Released here, not by the close: the server ends a closed session after the
            # client has moved on, so the next watcher could be refused.
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(),))
        except psycopg.Error:
            return  # cut meanwhile: the lock went with the session

    def _key(self) -> int:
        return mesh_key(self.book.backend.changes.mesh_id, "watch", self.host)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
