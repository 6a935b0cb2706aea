"""Quarantine for a PostgreSQL mesh: a stored row that fails its check is moved (in the same
transaction) to `mesh_quarantine`, kept there, reported in `backend.warnings`, never returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend


def quarantine(
    backend: PostgresBackend,
    cur: psycopg.Cursor[Any],
    *,
    table: str,
    column: str,
    key: str,
    reason: str,
) -> None:
    """Move the row of `table` whose `column` is `key` into `mesh_quarantine` (a read-only view
    leaves it in place and only reports it). `table` and `column` are this package's own names,
    never input."""
    kind = table.removeprefix("mesh_")
    if backend.read_only:
        backend.warnings.append(
            f"damaged {kind} row {key!r} ({reason}); left in place by a read-only run"
        )
        return
    cur.execute(
        f"WITH gone AS (DELETE FROM {table} WHERE {column} = %s RETURNING *) "  # noqa: S608 -- names are constants of this package
        "INSERT INTO mesh_quarantine (kind, key, reason, raw) "
        "SELECT %s, %s, %s, to_jsonb(gone) FROM gone",
        (key, kind, key, reason),
    )
    if cur.rowcount:
        backend.warnings.append(
            f"quarantined {kind} row {key!r} ({reason}); it was moved to mesh_quarantine"
        )


def set_aside(
    backend: PostgresBackend,
    cur: psycopg.Cursor[Any],
    kind: str,
    key: str,
    reason: str,
    raw: Any,
) -> None:
    """Record that the row `key` of table `kind` (already deleted by the caller, or about to
    be, in the transaction of `cur`) held `raw`, which failed its check for `reason` (for a
    caller that reads a whole table and deletes what fails; `quarantine` moves one row)."""
    from psycopg.types.json import Jsonb

    if backend.read_only:
        backend.warnings.append(
            f"damaged {kind} record {key} ({reason}); left in place by a read-only run"
        )
        return
    cur.execute(
        "INSERT INTO mesh_quarantine (kind, key, reason, raw) VALUES (%s, %s, %s, %s) RETURNING id",
        (kind, key, reason, Jsonb(raw)),
    )
    row = cur.fetchone()
    backend.warnings.append(
        f"quarantined {kind} record {key} ({reason}); it was moved to mesh_quarantine"
        f" (id {row[0] if row else '?'})"
    )
