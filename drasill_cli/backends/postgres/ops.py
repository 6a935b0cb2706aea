"""Writes that survive a connection lost as they commit (issue 23 point 6).

When the connection drops after the server committed a write but before its answer arrived,
the client cannot tell whether it happened. Running it again could do it twice (a second copy
of a message, a second task claimed). So each such write carries an id its client chose before
the first try, and the write checks that id in its own transaction:

- a send's id is its message id (`mesh_messages` is unique by recipient and id: the insert does
  nothing the second time, and the retry then finds the copy);
- the other writes (task changes and adds, takes from an inbox, lock decisions) insert their id
  into `mesh_ops` first (`begin`): a second try waits on the first's uncommitted row and then
  finds it, with the outcome the first stored (`finish`), which it returns instead of deciding
  again.

`retried` runs such a write, and once more when the connection was lost midway (a fresh
connection is opened for it); if the second try fails as well, the error says whether the
write may have happened and how to check. Only an outermost operation is retried: one nested
in a longer transaction fails with it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from drasill_cli.backends.postgres.connection import driver
from drasill_cli.errors import MeshUnusable

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

T = TypeVar("T")

LOST = "database-connection-lost"
UNKNOWN = "database-outcome-unknown"
# How long a second try waits for a first one the server still runs (`begin`).
RETRY_WAIT_S = 10.0
_tries = threading.local()  # `second`: this thread runs the second try of an operation
# How long a done operation's row is kept (`sweep`): far longer than any retry takes.
OPS_KEPT = "1 day"


class Done(NamedTuple):
    """An operation that committed before: what it stored as its outcome."""

    outcome: Any


def new_op(kind: str) -> str:
    """A fresh operation id (`kind` names the write, for people reading the table)."""
    return f"{kind}-{uuid.uuid4().hex}"


def second_try() -> bool:
    """Whether this thread runs the second try of an operation (`retried`): a write done in
    one statement checks its id with `begin` instead, inside a transaction."""
    return bool(getattr(_tries, "second", False))


def begin(cur: psycopg.Cursor[Any], op: str) -> Done | None:
    """Claim `op` for this transaction: None when it is new (do the write, then `finish`), or
    the outcome of the try that already committed it (do nothing more). A try still running
    under the same id is waited for (its row's unique key), so the two never both write; a
    second try waits at most `RETRY_WAIT_S` (a first try whose server has not yet seen its
    client go, as across a network cut, holds its row until it does)."""
    insert = "INSERT INTO mesh_ops (op) VALUES (%s) ON CONFLICT (op) DO NOTHING RETURNING op"
    if getattr(_tries, "second", False):
        cur.execute(
            "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
            (f"{max(1, int(RETRY_WAIT_S * 1000))}ms",),
        )
        previous = cur.fetchone()
        cur.execute(insert, (op,))
        new = cur.fetchone() is not None
        cur.execute(
            "SELECT set_config('lock_timeout', %s, true)", (previous[0] if previous else "0",)
        )
    else:
        cur.execute(insert, (op,))
        new = cur.fetchone() is not None
    if new:
        return None
    cur.execute("SELECT outcome FROM mesh_ops WHERE op = %s", (op,))
    row = cur.fetchone()
    return Done(None if row is None else row[0])


def finish(cur: psycopg.Cursor[Any], op: str, outcome: Any) -> None:
    """Store what `op` did (JSON), committed with the write itself."""
    from psycopg.types.json import Jsonb

    cur.execute("UPDATE mesh_ops SET outcome = %s WHERE op = %s", (Jsonb(outcome), op))


def forget(cur: psycopg.Cursor[Any], op: str) -> None:
    """`op` wrote nothing (nothing to keep: a second try may decide afresh)."""
    cur.execute("DELETE FROM mesh_ops WHERE op = %s", (op,))


def sweep(cur: psycopg.Cursor[Any]) -> int:
    """Drop the rows of operations done more than `OPS_KEPT` ago; how many."""
    cur.execute("DELETE FROM mesh_ops WHERE at < now() - %s::interval", (OPS_KEPT,))
    return cur.rowcount


def retried(backend: PostgresBackend, check: str, attempt: Callable[[], T]) -> T:
    """`attempt()`, run once more when the connection was lost midway.

    `attempt` must be safe to run twice: it checks its operation id in its own transaction.
    When the second try fails too, a first try that may have committed makes the error
    `database-outcome-unknown`, naming `check` (how to see whether it happened)."""
    db = backend.db
    idle = driver().pq.TransactionStatus.IDLE
    if backend.read_only or db.conn.info.transaction_status != idle:
        return attempt()  # nested: the outer operation fails whole (and may be retried)
    try:
        return attempt()
    except MeshUnusable as exc:
        if exc.code not in (LOST, UNKNOWN):
            raise
        first = exc
    _tries.second = True
    try:
        return attempt()
    except MeshUnusable as exc:
        if UNKNOWN in (first.code, exc.code):
            reason = str(first.details.get("reason") or exc.details.get("reason") or "")
            raise db.outcome_unknown(reason, check) from None
        raise first from None  # neither try wrote anything: the first says so
    finally:
        _tries.second = False
