"""`BudgetBook` for a PostgreSQL mesh: `mesh_budgets`, one row per (agent, state) where the
state is `paused` or `warned`, each operation one transaction. The server writes the role of
each write into the record (`written_by`, `current_user`): a pause is resumed only by a watcher
of the same host and role (a member with the URL can still forge one: see
docs/howto-multi-host.md).

The two exclusions are held on a connection of their own, opened for the block and closed after
it (a holder that dies drops its connection, and with it the exclusion), so the operations run
inside the block go through the mesh's usual connection and commit on their own:

- `admitting`: the guard row `budgets` of `mesh_guards`, locked `FOR UPDATE` for the block, so
  one declaration at a time is checked and written, on any host;
- `enforcing`: a session advisory lock keyed by the mesh's id and this host, since each
  host's `mesh watch` enforces against its own RAM and GPUs: one pass at a time per host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from drasill_cli import clock
from drasill_cli.backends.postgres.quarantine import set_aside
from drasill_cli.backends.postgres.schema import mesh_key
from drasill_cli.liveness import hostname
from drasill_cli.models import RecordError
from drasill_cli.storage.budgets import Stopped, check_pause, check_warning
from drasill_cli.storage.changes import MESH, Change

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

T = TypeVar("T")

PAUSED, WARNED = "paused", "warned"


class PostgresBudgetBook:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    # ---- the exclusions ---------------------------------------------------------------------

    def admitting(self) -> contextlib.AbstractContextManager[None]:
        return self._held("SELECT 1 FROM mesh_guards WHERE name = 'budgets' FOR UPDATE", ())

    def enforcing(self) -> contextlib.AbstractContextManager[None]:
        # Keyed by the mesh's id (advisory locks are database-wide) and the host.
        key = mesh_key(self.backend.changes.mesh_id, "enforce", hostname())
        return self._held("SELECT pg_advisory_lock(%s)", (key,))

    @contextlib.contextmanager
    def _held(self, statement: str, params: tuple[Any, ...]) -> Iterator[None]:
        """`statement` (which locks something until the transaction or session ends) run in a
        transaction on a connection of its own, held for the block; closing the connection
        ends both."""
        db = self.backend.db
        self._schema()  # the tables exist before the guard is looked for
        conn = db.connect(holding=True)  # idle in its transaction while the block runs
        try:
            with db.errors_mapped():
                conn.execute("BEGIN")
                conn.execute(statement, params)
            yield
        finally:
            conn.close()

    def _schema(self) -> str:
        db = self.backend.db
        db.conn  # noqa: B018 -- connecting makes or migrates the tables and learns the schema
        assert db.schema is not None  # noqa: S101 -- ensure_schema sets it or raises
        return db.schema

    # ---- pauses -----------------------------------------------------------------------------

    def paused(self, *, own: bool = False) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT agent, record FROM mesh_budgets WHERE state = %s AND (NOT %s"
                " OR (host = %s AND record->>'written_by' = current_user))"
                ' ORDER BY agent COLLATE "C"',
                (PAUSED, own, hostname()),
            )
            names = []
            for agent, raw in cur.fetchall():
                if self._checked(cur, agent, PAUSED, raw, check_pause, delete=True) is not None:
                    names.append(agent)
            return names

    def pause(self, name: str, stopped: list[Stopped], over: list[dict[str, Any]]) -> None:
        record = {"agent": name, "pids": [list(s) for s in stopped], "over": over}
        self._put(name, PAUSED, {**record, "at": clock.iso()})

    def resume(self, name: str) -> list[Stopped]:
        with self.backend.transaction() as cur:
            # Only a pause a watcher of this host and role wrote (the server records the role):
            # any other resumes nothing here, and is left as it is.
            cur.execute(
                "DELETE FROM mesh_budgets WHERE agent = %s AND state = %s AND host = %s"
                " AND record->>'written_by' = current_user RETURNING record",
                (name, PAUSED, hostname()),
            )
            row = cur.fetchone()
            if row is None:
                return []
            self.backend.changes.notify(Change(MESH))
            return self._checked(cur, name, PAUSED, row[0], check_pause, delete=False) or []

    # ---- warnings ---------------------------------------------------------------------------

    def warned(self, name: str) -> dict[str, float] | None:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT record FROM mesh_budgets WHERE agent = %s AND state = %s", (name, WARNED)
            )
            row = cur.fetchone()
            if row is None:
                return None
            return self._checked(cur, name, WARNED, row[0], check_warning, delete=True)

    def warn(self, name: str, over: dict[str, float]) -> None:
        self._put(name, WARNED, {"over": over, "at": clock.iso()})

    def forget_warning(self, name: str) -> None:
        with self.backend.transaction() as cur:
            cur.execute("DELETE FROM mesh_budgets WHERE agent = %s AND state = %s", (name, WARNED))
            if cur.rowcount:
                self.backend.changes.notify(Change(MESH))

    # ---- rows -------------------------------------------------------------------------------

    def _put(self, name: str, state: str, record: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        with self.backend.transaction() as cur:
            cur.execute(
                "INSERT INTO mesh_budgets (agent, state, host, record) VALUES (%s, %s, %s,"
                " jsonb_set(%s, '{written_by}', to_jsonb(current_user::text)))"
                " ON CONFLICT (agent, state) DO UPDATE"
                " SET host = excluded.host, updated = now(), record = excluded.record",
                (name, state, hostname(), Jsonb(record)),
            )
            self.backend.changes.notify(Change(MESH))

    def _checked(
        self,
        cur: psycopg.Cursor[Any],
        name: str,
        state: str,
        raw: Any,
        check: Callable[[Any], T],
        *,
        delete: bool,
    ) -> T | None:
        """`check(raw)`, or None after quarantining the row (deleting it first when `delete`:
        a row the caller already deleted is only recorded)."""
        try:
            return check(raw)
        except RecordError as exc:
            if delete and not self.backend.read_only:
                cur.execute(
                    "DELETE FROM mesh_budgets WHERE agent = %s AND state = %s", (name, state)
                )
            set_aside(self.backend, cur, "budgets", f"{state}/{name}", exc.reason, raw)
            return None
