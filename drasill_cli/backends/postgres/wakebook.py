"""`WakeBook` for a PostgreSQL mesh: `mesh_wake` rows per agent, and one `mesh watch` per host.

A watcher types into the sessions of its own host only, so each host runs its own: the guard is
a session advisory lock keyed by (schema, host), held on a connection of the watcher's own for
the whole block, so it dies with the process (or its connection) and a killed watcher never
blocks the next one. Its `mesh_watchers` row names the holder for those refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.backends.postgres.quarantine import quarantine
from drasill_cli.storage.wakebook import AlreadyWatching

if TYPE_CHECKING:
    from drasill_cli.backends.postgres import PostgresBackend

_KEY = "hashtext('drasill-watch:' || %s), hashtext(%s)"


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
    def watching(self, host: str, holder: dict[str, Any]) -> Iterator[None]:
        from psycopg.types.json import Jsonb

        db = self.backend.db
        schema = self.backend.changes.schema
        conn = db.connect()  # the guard's own connection: the lock lives as long as it does
        try:
            with db.errors_mapped():
                row = conn.execute(f"SELECT pg_try_advisory_lock({_KEY})", (schema, host))
                taken = row.fetchone()
            if not (taken and taken[0]):
                raise AlreadyWatching(self._holder(host))
            with db.errors_mapped():
                conn.execute(
                    "INSERT INTO mesh_watchers (host, record) VALUES (%s, %s)"
                    " ON CONFLICT (host) DO UPDATE SET record = EXCLUDED.record,"
                    " started = now(), heartbeat = now()",
                    (host, Jsonb(holder)),
                )
            yield
            with db.errors_mapped():
                if not conn.closed:
                    conn.execute("DELETE FROM mesh_watchers WHERE host = %s", (host,))
                    # Released here, not by the close: the server ends a closed session
                    # after the client has moved on, so the next watcher could be refused.
                    conn.execute(f"SELECT pg_advisory_unlock({_KEY})", (schema, host))
        finally:
            conn.close()  # ends the session: a lock still held (a failure above) goes with it
