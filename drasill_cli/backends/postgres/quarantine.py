"""Setting a damaged row aside: a stored record that fails its check is moved to
`mesh_quarantine` (deleted from its table in the same transaction) and reported in the backend's
warnings, never returned. A read-only view leaves it in place and only reports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend


def quarantine(
    backend: PostgresBackend,
    cur: psycopg.Cursor[Any],
    kind: str,
    key: str,
    reason: str,
    raw: Any,
) -> None:
    """Record that the row `key` of table `kind` (already deleted by the caller, or about to
    be, in the transaction of `cur`) held `raw`, which failed its check for `reason`."""
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
