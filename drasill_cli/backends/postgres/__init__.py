"""The PostgreSQL mesh: every storage interface on tables in one database, for agents on
several machines.

Everything database-shaped lives in this package and nowhere else: the driver (psycopg 3,
imported only when a URL mesh is opened), the connection and its failures (`connection.py`),
the tables and their migrations (`schema.py`), and LISTEN/NOTIFY waits (`changes.py`). The
modules beside them implement the interfaces of `drasill_cli.storage`, each operation one
transaction (`Database.transaction`), exactly-once takes by `FOR UPDATE SKIP LOCKED`, times by
the database clock, and announce what they changed with `PostgresChanges.notify`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.connection import Database, driver

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres.attachments import PostgresAttachments
    from drasill_cli.backends.postgres.auditlog import PostgresAuditLog
    from drasill_cli.backends.postgres.board import PostgresBoard
    from drasill_cli.backends.postgres.budgets import PostgresBudgetBook
    from drasill_cli.backends.postgres.changes import PostgresChanges
    from drasill_cli.backends.postgres.locktable import PostgresLockTable
    from drasill_cli.backends.postgres.mailbox import PostgresMailbox
    from drasill_cli.backends.postgres.maintenance import PostgresMaintenance
    from drasill_cli.backends.postgres.presence import PostgresPresence
    from drasill_cli.backends.postgres.transfer import PostgresTransfer
    from drasill_cli.backends.postgres.wakebook import PostgresWakeBook
    from drasill_cli.config import Config
    from drasill_cli.storage.changes import Change


def _loads(data: str | bytes) -> Any:
    """A `json`/`jsonb` column's value, or, when it is nested deeper than Python's parser goes
    (any member can store such a row), its text as a plain string: every check then refuses it
    ("is not an object") and it is quarantined whole, never a traceback."""
    import json

    try:
        return json.loads(data)
    except RecursionError:
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _read_json_safely() -> None:
    """Every JSON value read from a mesh's tables goes through `_loads` (set once, for this
    process's connections)."""
    from psycopg.types.json import set_json_loads

    set_json_loads(_loads)


class PostgresBackend:
    """A PostgreSQL mesh: one `Database` (connected on first use) and the interfaces on it."""

    kind = "postgres"

    def __init__(self, db: Database, config: Config, *, read_only: bool = False) -> None:
        _read_json_safely()
        self.db = db
        self.config = config
        self._read_only = read_only
        self._warnings: list[str] = []

    @classmethod
    def open(cls, url: str, config: Config, *, read_only: bool = False) -> PostgresBackend:
        """The mesh at `url`, connected (its tables made or migrated on first use); exit 4 at
        once when the driver is missing or the database cannot be used, before any command
        starts its work. `read_only`: every session is read-only and the tables are never
        made nor migrated (`exists` says whether they are there)."""
        driver()
        store = config.store
        db = Database(
            url,
            read_only=read_only,
            statement_timeout=store.statement_timeout,
            idle_timeout=store.idle_timeout,
            reconnect_timeout=store.reconnect_timeout,
        )
        db.conn  # noqa: B018 -- connect now: a failure is one exit-4 line, not a half-run command
        return cls(db, config, read_only=read_only)

    @property
    def location(self) -> str:
        """The URL with its password masked."""
        return self.db.masked

    @property
    def warnings(self) -> list[str]:
        return self._warnings

    @property
    def read_only(self) -> bool:
        return self._read_only

    def exists(self) -> bool:
        """Whether the mesh's tables exist: always, once opened for writing (opening made
        them); opened read-only, only if a writing command made them."""
        return self.db.present

    def child_env(self) -> dict[str, str]:
        """The URL as given (a password in it included: the child must log in as this process
        does; it travels in the environment only, never in any output)."""
        return {"DRASILL_MESH_URL": self.db.url, "DRASILL_MESH_DIR": ""}  # "": not set

    def read_only_view(self) -> PostgresBackend:
        """The same mesh (and connection); its transactions are READ ONLY."""
        view = PostgresBackend(self.db, self.config, read_only=True)
        view._warnings = self._warnings
        return view

    def transaction(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        """One transaction for one operation of an interface (READ ONLY in a read-only view):
        commits whole when the block ends, rolls back on any error; driver errors leave as
        exit-4 `MeshUnusable`, a `MeshError` raised inside leaves unchanged."""
        return self.db.transaction(read_only=self._read_only)

    def statement(self, sql: str, params: Any = (), *changes: Change) -> list[tuple[Any, ...]]:
        """One statement as one transaction (one round trip when no transaction is open; see
        `Database.statement`), then `changes` announced; its rows."""
        announce = self.changes.announcing(*changes) if changes else None
        return self.db.statement(sql, params, read_only=self._read_only, announce=announce)

    def close(self) -> None:
        """Close the connection (a view shares it: closing either closes both)."""
        self.db.close()

    # ---- the interfaces of drasill_cli.storage (one cached property each) -------------------

    @cached_property
    def changes(self) -> PostgresChanges:
        from drasill_cli.backends.postgres.changes import PostgresChanges

        return PostgresChanges(self.db)

    @cached_property
    def mailbox(self) -> PostgresMailbox:
        from drasill_cli.backends.postgres.mailbox import PostgresMailbox

        return PostgresMailbox(self, self.attachments)

    @cached_property
    def attachments(self) -> PostgresAttachments:
        from drasill_cli.backends.postgres.attachments import PostgresAttachments

        return PostgresAttachments(self)

    @cached_property
    def presence(self) -> PostgresPresence:
        from drasill_cli.backends.postgres.presence import PostgresPresence

        return PostgresPresence(self)

    @cached_property
    def audit_log(self) -> PostgresAuditLog:
        from drasill_cli.backends.postgres.auditlog import PostgresAuditLog

        return PostgresAuditLog(self, self.config.audit)

    @cached_property
    def wake_book(self) -> PostgresWakeBook:
        from drasill_cli.backends.postgres.wakebook import PostgresWakeBook

        return PostgresWakeBook(self)

    @cached_property
    def maintenance(self) -> PostgresMaintenance:
        from drasill_cli.backends.postgres.maintenance import PostgresMaintenance

        return PostgresMaintenance(self)

    @cached_property
    def board(self) -> PostgresBoard:
        from drasill_cli.backends.postgres.board import PostgresBoard

        return PostgresBoard(self)

    @cached_property
    def transfer(self) -> PostgresTransfer:
        from drasill_cli.backends.postgres.transfer import PostgresTransfer

        return PostgresTransfer(self)

    @cached_property
    def locks(self) -> PostgresLockTable:
        from drasill_cli.backends.postgres.locktable import PostgresLockTable

        return PostgresLockTable(self)

    @cached_property
    def budgets(self) -> PostgresBudgetBook:
        from drasill_cli.backends.postgres.budgets import PostgresBudgetBook

        return PostgresBudgetBook(self)
