"""`LockTable` for a PostgreSQL mesh: one row of `mesh_locks` per (path key, holder).

`transact` is one transaction: it first locks the guard row `locks` of `mesh_guards`
(`SELECT ... FOR UPDATE`), so every other `transact` of the mesh, on any host, waits until this
one commits or rolls back; then it reads the whole table, runs the decision, applies its removes
and puts (upserts keyed by path and holder) and announces the change. A crash midway rolls the
whole decision back and frees the guard with the connection.

The records keep their own ISO stamps (`acquired_at`, `expires_at`: `drasill_cli.locks` reads
them); the column `renewed` is when the row was last written, by the database clock. A row that
is not a lock, or whose key columns do not match its record, is quarantined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from drasill_cli.backends.postgres.ops import begin, finish, forget, new_op, retried
from drasill_cli.backends.postgres.quarantine import set_aside
from drasill_cli.models import RecordError
from drasill_cli.storage.changes import MESH, Change
from drasill_cli.storage.exclusion import deciding
from drasill_cli.storage.locktable import LockChanges, check_lock

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

T = TypeVar("T")


class PostgresLockTable:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    def all(self) -> list[dict[str, Any]]:
        with self.backend.transaction() as cur:
            return self._read(cur)

    def transact(self, decide: Callable[[list[dict[str, Any]]], LockChanges[T]]) -> T:
        """One try, and a second under the same operation id when the connection was lost
        midway (`retried`): a decision the first try committed is not made again, its
        result (JSON: lists, dicts, strings, numbers, booleans; a tuple comes back a list)
        is returned."""
        op = new_op("locks")
        return retried(self.backend, "look with `mesh locks`", lambda: self._transact(op, decide))

    def _transact(self, op: str, decide: Callable[[list[dict[str, Any]]], LockChanges[T]]) -> T:
        with self.backend.transaction() as cur:
            if self.backend.read_only:  # a dry run: nothing may change, so nothing to guard
                changes = deciding("LockTable.transact", decide, self._read(cur))
                if changes.put or changes.remove:
                    raise RuntimeError("a lock change was attempted through a read-only view")
                return changes.result
            done = begin(cur, op)
            if done is not None:
                result: T = done.outcome
                return result
            cur.execute("SELECT 1 FROM mesh_guards WHERE name = 'locks' FOR UPDATE")
            changes = deciding("LockTable.transact", decide, self._read(cur))
            self._apply(cur, changes)
            if changes.put or changes.remove:
                finish(cur, op, changes.result)
            else:
                forget(cur, op)  # nothing written: a second try may decide afresh
        return changes.result

    def _read(self, cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
        """Every lock row, checked; a damaged one is quarantined (deleted in this transaction)."""
        cur.execute("SELECT key, holder, record FROM mesh_locks")
        table, damaged = [], []
        for key, holder, raw in cur.fetchall():
            try:
                lock = _check_row(key, holder, raw)
            except RecordError as exc:
                damaged.append((key, holder, exc.reason, raw))
                continue
            table.append(lock)
        for key, holder, reason, raw in damaged:
            if not self.backend.read_only:
                cur.execute("DELETE FROM mesh_locks WHERE key = %s AND holder = %s", (key, holder))
            set_aside(self.backend, cur, "locks", f"{key} (holder {holder})", reason, raw)
        return table

    def _apply(self, cur: psycopg.Cursor[Any], changes: LockChanges[Any]) -> None:
        from psycopg.types.json import Jsonb

        puts = [check_lock(lock) for lock in changes.put]  # a bad decision writes nothing
        if changes.remove:
            cur.executemany(
                "DELETE FROM mesh_locks WHERE key = %s AND holder = %s",
                [(lock["path"], lock["holder"]) for lock in changes.remove],
            )
        if puts:
            cur.executemany(
                "INSERT INTO mesh_locks (key, holder, mode, record) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key, holder) DO UPDATE"
                " SET mode = excluded.mode, renewed = now(), record = excluded.record",
                [(lock["path"], lock["holder"], lock["mode"], Jsonb(lock)) for lock in puts],
            )
        if changes.put or changes.remove:
            self.backend.changes.notify(Change(MESH))


def _check_row(key: str, holder: str, raw: Any) -> dict[str, Any]:
    """`check_lock` for the row (`key`, `holder`): the record must also be the one its key
    columns say (a row written by hand with the wrong key would never be found to remove)."""
    lock = check_lock(raw)
    if (lock["path"], lock["holder"]) != (key, holder):
        raise RecordError("its key and holder columns do not match its path and holder")
    return lock
