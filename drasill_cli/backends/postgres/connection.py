"""The connection to a PostgreSQL mesh: the driver (psycopg 3), connecting, transactions, and
every failure turned into one `MeshUnusable` line that names the host and the fix.

psycopg is imported here and in the modules beside this one only, and only when a URL mesh is
opened: a directory mesh never pays for it. A password never reaches a message: `mask_url` is
the only form of the URL this package shows, and `_scrub` removes the password from any text
the driver hands back.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.backends.postgres.urls import describe_host, mask_url
from drasill_cli.backends.postgres.urls import passwords as _passwords
from drasill_cli.errors import MeshUnusable

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'drasill-cli[postgres]'"
CONNECT_TIMEOUT_S = 5
APPLICATION_NAME = "mesh"
MASK = "***"


def driver() -> Any:
    """The psycopg module; exit 4 with what to install when it is missing."""
    try:
        import psycopg
    except ImportError:
        raise MeshUnusable(
            "a PostgreSQL mesh (--mesh-url, DRASILL_MESH_URL or [store] url) needs the driver "
            f"psycopg, which is not installed; install it with: {INSTALL_HINT}",
            code="driver-missing",
        ) from None
    return psycopg


# Where a failure comes from, read from libpq's words (connection failures carry no SQLSTATE).
_LOGIN = re.compile(
    r"password authentication failed|no password supplied|role \S+ does not exist|"
    r"authentication failed|pg_hba\.conf|not permitted to log in",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r"database \S+ does not exist", re.IGNORECASE)


# The announcements of committed changes, in their own transaction that does not wait for its
# flush (`Database.announce`): a lost notification only delays a waiter to its re-check. Only
# channels someone listens on are notified (`mesh_listening`): with none, the statement is a
# read, which costs no transaction id, no commit record and no NOTIFY lock.
_ANNOUNCE = (
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, p)"
    " FROM unnest(%s::text[], %s::text[]) AS n(c, p)"
    " WHERE EXISTS (SELECT 1 FROM mesh_listening AS l WHERE l.channel = n.c)"
)


# The last column of a statement that announces (`Database.statement`): the channels of its
# parameter that someone listens on (`mesh_listened`, MIGRATION_2).
LISTENED = "mesh_listened(%s::text[])"


def _only(announce: tuple[list[str], list[str]], channels: set[str]) -> tuple[list[str], list[str]]:
    """The pairs of `announce` whose channel is in `channels`."""
    pairs = [(c, p) for c, p in zip(*announce, strict=True) if c in channels]
    return [c for c, _ in pairs], [p for _, p in pairs]


# Appended to the connection's `options` (libpq: a backslash keeps the space in the value).
_READ_COMMITTED = r"-c default_transaction_isolation=read\ committed"


class _Owned:
    """A thread's connection, held in the thread's local storage."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn


class Database:
    """One PostgreSQL mesh's connections (one per thread, opened on its first use) and
    transactions on them.

    A connection carries one transaction at a time, so threads never share one: a thread's
    operations (and the ones nested inside them, such as the audit line a task change appends)
    run on that thread's own connection, while another thread's run beside them. A thread's
    connection closes when the thread ends, and every one at `close`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked = mask_url(url)
        self.host = describe_host(url)
        self._passwords = _passwords(url)
        self._local = threading.local()
        self._closers: list[weakref.finalize[Any, Any]] = []  # one per thread's connection
        self._guard = threading.Lock()
        self.schema: str | None = None  # the mesh's schema, known once connected
        self.clock_offset = 0.0  # the server's clock minus this host's, known once connected

    # ---- connecting -------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection in autocommit mode (transactions are explicit), or exit 4.

        Its transactions are READ COMMITTED whatever the role's or database's default: the
        mesh's row locks and its listeners' lock rely on each statement seeing what was
        committed before it (the URL's own `options`, such as a search_path, are kept)."""
        pg = driver()
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = str(conninfo_to_dict(self.url).get("options") or "")
            conn: psycopg.Connection[Any] = pg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
                options=f"{given} {_READ_COMMITTED}".strip(),
            )
        except pg.Error as exc:
            raise self.unusable(exc, connecting=True) from None
        return conn

    @property
    def _conn(self) -> psycopg.Connection[Any] | None:
        """This thread's connection, if it opened one."""
        owned = getattr(self._local, "owned", None)
        return None if owned is None else owned.conn

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """This thread's connection, opened (and the tables made or migrated) on first use."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = self.connect()
            from drasill_cli.backends.postgres.schema import ensure_schema

            try:
                ensure_schema(self, conn)
            except BaseException:
                conn.close()
                raise
            # One clock for the whole mesh: the server's (leases, heartbeat ages, stamps, ids).
            clock.follow(self.clock_offset)
            owned = _Owned(conn)
            self._local.owned = owned
            # Closed when the thread ends (its local, and so `owned`, is dropped) or at `close`.
            closer = weakref.finalize(owned, conn.close)
            with self._guard:
                self._closers = [c for c in self._closers if c.alive] + [closer]
        return conn

    def close(self) -> None:
        """Close every thread's connection."""
        with self._guard:
            closers, self._closers = self._closers, []
        for closer in closers:
            closer()

    # ---- transactions -----------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: commits when the block ends, rolls back on any error; what it
        announced goes out once it has committed (`announce`). Driver errors leave as
        `MeshUnusable` naming the host and the fix."""
        psycopg = driver()
        conn = self.conn
        outermost = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        pending = self._pending
        announced_before = len(pending)
        try:
            # Nested in this thread's open transaction (a read inside a task change), the block
            # is a savepoint; PostgreSQL ends its READ ONLY with it, the outer one stays writable.
            with conn.transaction(), conn.cursor() as cur:
                if read_only:
                    cur.execute("SET TRANSACTION READ ONLY")
                yield cur
        except BaseException as exc:
            del pending[announced_before:]  # rolled back: nothing of it is announced
            if isinstance(exc, psycopg.Error):
                raise self.unusable(exc) from None
            raise
        if outermost:
            self._send_announcements(conn)

    def statement(
        self,
        sql: str,
        params: Any = (),
        *,
        read_only: bool = False,
        announce: tuple[list[str], list[str]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement as one transaction and return its rows (none for a statement that
        returns none).

        Outside a transaction the statement runs on its own in autocommit: PostgreSQL makes it
        one transaction, committed whole or not at all, in one round trip (no BEGIN or COMMIT
        of their own: the hot paths, such as a send, are a statement each). Nested in this
        thread's open transaction, or in a read-only view, it runs in `transaction` as before.

        With `announce` (channels, payloads), the statement returns one row whose last column
        is `LISTENED` (its parameter, the channels, is appended to `params` here; the column is
        not returned), or no row when it wrote nothing (then nothing is announced). That
        column holds the channels of `announce` someone listens on, looked up after the
        statement's writes and under the listeners' lock (`MIGRATION_2`); those are announced
        once it has committed, and with none, nothing more is sent: a write that nobody
        waits for is one round trip.
        """
        psycopg = driver()
        conn = self.conn
        nested = conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE
        if announce is not None:  # nested: no look (and no lock held for the outer's length)
            params = (*params, None if nested or read_only else announce[0])
        if read_only or nested:
            with self.transaction(read_only=read_only) as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.description is not None else []
                if announce is not None and rows:
                    self.announce(*announce)  # after the outermost commit, for any listener
                    rows = [row[:-1] for row in rows]
                return rows
        try:
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.pgresult and cur.pgresult.nfields else []
        except psycopg.Error as exc:
            raise self.unusable(exc) from None
        if announce is not None:
            listened = rows[0][-1] if rows else None  # no row: nothing written
            if listened:
                self.announce(*_only(announce, set(listened)))  # committed: sent at once
            rows = [row[:-1] for row in rows]
        return rows

    # ---- announcements ----------------------------------------------------------------------

    @property
    def _pending(self) -> list[tuple[str, str]]:
        """This thread's announcements waiting for their transaction to commit."""
        pending: list[tuple[str, str]] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = []
        return pending

    def announce(self, channels: list[str], payloads: list[str]) -> None:
        """Notify `channels` (each with its payload) once this thread's open transaction has
        committed, or drop them if it rolls back.

        The notifications go out after the commit, in one transaction of their own that does
        not wait for its WAL flush. NOTIFY takes a cluster-wide lock at commit and holds it to
        the end of its transaction, so a NOTIFY inside a durable write would hold that lock
        across the write's flush and queue every other writer's commit behind it: writers
        could never share a flush. A waiter woken this way reads the tables, where the change
        is already committed. If this process dies between the two, the waiters learn of the
        change at their safety re-check (`changes.RECHECK_S`) instead.

        Only channels with a listener are notified (`mesh_listening`, read after the commit).
        A watch LISTENs and adds its rows in one transaction and looks at the tables after, so
        a change its first look misses committed after those rows did, and is announced.
        Outside a transaction (the change is already committed) they go out at once.
        """
        self._pending.extend(zip(channels, payloads, strict=True))
        conn = self._conn
        idle = driver().pq.TransactionStatus.IDLE
        if conn is not None and conn.pgconn.transaction_status == idle:
            self._send_announcements(conn)

    def _send_announcements(self, conn: psycopg.Connection[Any]) -> None:
        pending = self._pending
        if not pending:
            return
        unique = list(dict.fromkeys(pending))
        pending.clear()
        psycopg = driver()
        try:
            conn.execute(_ANNOUNCE, ([c for c, _ in unique], [p for _, p in unique]))
        except psycopg.Error:
            # The change itself is committed, so the operation succeeded; its waiters find it
            # at their re-check, and a broken connection fails the next operation, not this.
            return

    @contextmanager
    def errors_mapped(self) -> Iterator[None]:
        """Driver errors raised inside the block leave as `MeshUnusable` (for work outside a
        transaction, such as LISTEN and waiting for notifications)."""
        psycopg = driver()
        try:
            yield
        except psycopg.Error as exc:
            raise self.unusable(exc) from None

    # ---- failures ---------------------------------------------------------------------------

    @property
    def has_password(self) -> bool:
        """Whether the URL carries a password (`scrub` has something to mask)."""
        return bool(self._passwords)

    def scrub(self, text: str) -> str:
        """`text` with every password of the URL masked."""
        for password in self._passwords:
            text = text.replace(password, MASK)
        return text

    def unusable(  # noqa: PLR0911 -- one return per kind of failure, each with its own fix
        self, exc: BaseException, *, connecting: bool = False, lost: bool = False
    ) -> MeshUnusable:
        """The one-line exit-4 error for a driver failure: what happened, on which host, and
        what to do. Never holds the password."""
        reason = " ".join(str(exc).split())  # one line
        reason = reason.removeprefix("connection failed: ").removeprefix("connection is bad: ")
        reason = self.scrub(reason.split(" failed: ", 1)[-1])[:200]
        where = f"the mesh database at {self.host}"
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if _LOGIN.search(reason) or sqlstate.startswith("28"):
            return MeshUnusable(
                f"{where} refused the login ({reason}); fix the user or password in the URL, "
                "~/.pgpass or PGPASSWORD, or the server's pg_hba.conf",
                code="database-login-refused",
            )
        if _NO_DATABASE.search(reason) or sqlstate == "3D000":
            return MeshUnusable(
                f"{where}: {reason}; create it (createdb NAME) or fix the database name in the URL",
                code="database-missing",
            )
        if sqlstate == "42501":
            return MeshUnusable(
                f"{where} refused an operation for lack of a privilege ({reason}); grant the "
                "mesh's role CREATE on its schema (and database) and rights on the mesh_* tables",
                code="database-privilege-missing",
            )
        if sqlstate == "25006":
            return MeshUnusable(
                f"{where} refused a write in a read-only view ({reason}); this is a bug: report it",
                code="database-read-only",
            )
        if connecting:
            return MeshUnusable(
                f"{where} is unreachable ({reason}); start the server, or fix the host and "
                "port in --mesh-url, DRASILL_MESH_URL or [store] url",
                code="database-unreachable",
            )
        lost = lost or (self._conn is not None and bool(self._conn.closed))
        if lost or sqlstate.startswith(("08", "57")):
            return MeshUnusable(
                f"the connection to {where} was lost midway ({reason}); nothing was half-done "
                "(the transaction rolled back): check the server and run the command again",
                code="database-connection-lost",
            )
        return MeshUnusable(
            f"{where} failed ({reason}); run mesh doctor, and check the server's log",
            code="database-error",
        )
