"""The connection to a PostgreSQL mesh: the driver (psycopg 3), connecting, transactions, and
every failure turned into one `MeshUnusable` line that names the host and the fix.

psycopg is imported here and in the modules beside this one only, and only when a URL mesh is
opened: a directory mesh never pays for it. A password never reaches a message: `mask_url` is
the only form of the URL this package shows, and `_scrub` removes the password from any text
the driver hands back.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.backends.postgres.urls import describe_host, mask_url
from drasill_cli.backends.postgres.urls import passwords as _passwords
from drasill_cli.errors import MeshUnusable, StoreUnreachable
from drasill_cli.storage.exclusion import refuse_inside

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'drasill-cli[postgres]'"
CONNECT_TIMEOUT_S = 5
# The defaults of `[store] statement_timeout`, `idle_timeout` and `reconnect_timeout`.
STATEMENT_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 10.0
RECONNECT_TIMEOUT_S = 60.0
# How much longer than the server's own limits an operation waits for a server that does not
# answer at all (`Database.no_answer_s`).
NO_ANSWER_MARGIN_S = 2.0
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


# How to check a write whose outcome is unknown, when the operation has no better way to say.
CHECK_ANY = "look with `mesh status`, `mesh history` or `mesh task show ID`"


# Appended to the connection's `options` (libpq: a backslash keeps the space in the value).
_READ_COMMITTED = r"-c default_transaction_isolation=read\ committed"
_READ_ONLY = "-c default_transaction_read_only=on"


def _ms(seconds: float) -> int:
    """A timeout setting's value in milliseconds (0: none; never rounded down to none)."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def _cut(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server ended `conn` while it sat idle between operations (a restart, or
    pg_terminate_backend): the server's goodbye, or the end of the stream, is waiting on the
    socket. Checked without blocking before each operation (one poll), so the operation runs
    on a new connection instead of failing on the dead one. A connection in a transaction is
    never replaced under it.

    A thread's connection never LISTENs (a watch has its own), so nothing else arrives
    unasked; the rare other message (a setting the server reports after a reload) only costs
    a new connection."""
    import select

    pq = driver().pq
    pgconn = conn.pgconn
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    if pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, driver().Error):
        return True


class _Watchdog:
    """Cuts the connection of an operation that waited on the server past its deadline: the
    server's own timeouts end whatever it still answers, but a stopped server (or one cut off
    without a word, on a socket) never answers, and the driver would wait forever. Cutting the
    socket (shutdown) wakes the waiting thread with a lost connection. One thread per
    process, started by the first operation, asleep while nothing is armed."""

    CHECK_S = 0.25  # how often deadlines are looked at while something is armed

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}  # id(conn): (deadline, its socket)
        self._expired: set[int] = set()
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        import time

        socket = conn.pgconn.socket
        with self._cond:
            idle = not self._armed
            self._armed[id(conn)] = (time.monotonic() + seconds, socket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mesh-db-watchdog")
                self._thread.daemon = True
                self._thread.start()
            elif idle:
                self._cond.notify()

    def disarm(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the operation had run past its deadline (its connection is cut)."""
        key = id(conn)
        with self._cond:
            self._armed.pop(key, None)
            expired = key in self._expired
            self._expired.discard(key)
        return expired

    def _run(self) -> None:
        import time

        with self._cond:
            while True:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for key, (deadline, socket) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        self._expired.add(key)
                        _shut(socket)
                self._cond.wait(self.CHECK_S)


def _shut(fd: int) -> None:
    """Shut the socket `fd` down both ways (the thread waiting on it wakes to an end), leaving
    the descriptor to its owner."""
    import socket

    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_WATCHDOG = _Watchdog()


def _forked() -> None:
    """In a forked child: a watchdog of its own (the parent's thread is not there, and its
    lock may have been held at the fork)."""
    global _WATCHDOG  # noqa: PLW0603 -- the one process-wide watchdog, replaced in a child
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_forked)


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

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        statement_timeout: float = STATEMENT_TIMEOUT_S,
        idle_timeout: float = IDLE_TIMEOUT_S,
        reconnect_timeout: float = RECONNECT_TIMEOUT_S,
    ) -> None:
        self.url = url
        # Server-side limits on every session (0: none): a statement that runs longer, or a
        # transaction idle longer, is ended by the server, and the command exits 4 naming it.
        self.statement_timeout = statement_timeout
        self.idle_timeout = idle_timeout
        # How long a waiting command tries to reconnect after losing the server (`Reconnect`).
        self.reconnect_timeout = reconnect_timeout
        # Read-only: every session read-only, the tables never made or migrated (completion).
        self.read_only = read_only
        self.present = True  # whether the mesh's tables exist (False only when read-only)
        self.masked = mask_url(url)
        self.host = describe_host(url)
        self._passwords = _passwords(url)
        self._local = threading.local()
        self._closers: list[weakref.finalize[Any, Any]] = []  # one per thread's connection
        self._guard = threading.Lock()
        self.schema: str | None = None  # the mesh's schema, known once connected
        self.mesh_id: str | None = None  # the mesh's random id (schema.py), known once connected
        self.clock_offset = 0.0  # the server's clock minus this host's, known once connected

    # ---- connecting -------------------------------------------------------------------------

    def connect(self, *, holding: bool = False) -> psycopg.Connection[Any]:
        """A new connection in autocommit mode (transactions are explicit), or exit 4.

        Its transactions are READ COMMITTED whatever the role's or database's default: the
        mesh's row locks and its listeners' lock rely on each statement seeing what was
        committed before it (the URL's own `options`, such as a search_path, are kept). Its
        statements end after `statement_timeout`, and a transaction left idle after
        `idle_timeout`, unless `holding`: a connection that holds a transaction open as a
        guard while its block runs (`PostgresBudgetBook`). Refused inside an exclusion's
        decision."""
        refuse_inside("a database connection")
        pg = driver()
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = str(conninfo_to_dict(self.url).get("options") or "")
            ours = f"{_READ_COMMITTED} {_READ_ONLY}" if self.read_only else _READ_COMMITTED
            idle = 0.0 if holding else self.idle_timeout
            ours += (
                f" -c statement_timeout={_ms(self.statement_timeout)}"
                f" -c idle_in_transaction_session_timeout={_ms(idle)}"
            )
            conn: psycopg.Connection[Any] = pg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
                options=f"{given} {ours}".strip(),
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
        """This thread's connection, opened (and the tables made or migrated) on first use, and
        opened again when the server ended it while it sat idle (a restart: `_cut`)."""
        conn = self._conn
        if conn is not None and not conn.closed and _cut(conn):
            conn.close()
        if conn is None or conn.closed:
            conn = self.connect()
            from drasill_cli.backends.postgres.schema import ensure_schema, inspect_schema

            try:
                with self.answering(conn):
                    if self.read_only:
                        inspect_schema(self, conn)
                    else:
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
        `MeshUnusable` naming the host and the fix. Refused inside an exclusion's decision
        (`storage.exclusion`)."""
        refuse_inside("a database transaction")
        psycopg = driver()
        conn = self.conn
        outermost = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        pending = self._pending
        announced_before = len(pending)
        committing = False  # the block is done: what fails now is the COMMIT (issue 23, 6)
        try:
            # Nested in this thread's open transaction (the backend's own: a task change's audit
            # row), the block is a savepoint; PostgreSQL ends its READ ONLY with it, the outer
            # one stays writable. A decision's call never gets here (`refuse_inside`).
            with self.answering(conn, outermost), conn.transaction(), conn.cursor() as cur:
                if read_only:
                    cur.execute("SET TRANSACTION READ ONLY")
                yield cur
                committing = outermost and not read_only
        except BaseException as exc:
            del pending[announced_before:]  # rolled back: nothing of it is announced
            if isinstance(exc, psycopg.Error):
                raise self.unusable(exc, committing=committing, view=read_only) from None
            raise
        if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            # The block swallowed the loss of its connection (a warning, say): psycopg then
            # skips the commit without a word. Nothing was committed: never report it done.
            del pending[announced_before:]
            lost = psycopg.OperationalError("the connection broke before the commit")
            raise self.unusable(lost, lost=True)
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
        waits for is one round trip. Refused inside an exclusion's decision.
        """
        refuse_inside("a database statement")
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
            with self.answering(conn):
                cur = conn.execute(sql, params)
                rows = cur.fetchall() if cur.pgresult and cur.pgresult.nfields else []
        except psycopg.Error as exc:
            # A write (one that announces) on its own commits as it runs: lost, it may have.
            raise self.unusable(exc, committing=announce is not None) from None
        if announce is not None:
            listened = rows[0][-1] if rows else None  # no row: nothing written
            if listened:
                self.announce(*_only(announce, set(listened)))  # committed: sent at once
            rows = [row[:-1] for row in rows]
        return rows

    # ---- a server that stops answering ------------------------------------------------------

    @property
    def no_answer_s(self) -> float | None:
        """How long an operation waits for a server that does not answer at all (stopped, or
        cut off without a word) before it gives up: past the server's own limits, which end
        anything slower that it still answers. None: no limit (`statement_timeout = 0`)."""
        if self.statement_timeout <= 0:
            return None
        return self.statement_timeout + max(self.idle_timeout, 0.0) + NO_ANSWER_MARGIN_S

    @contextmanager
    def answering(self, conn: psycopg.Connection[Any], guarded: bool = True) -> Iterator[None]:
        """The block (one operation on `conn`) is given `no_answer_s`: past it, the connection
        is cut (`_Watchdog`) and the failure leaves as one exit-4 line saying so. `guarded`
        False: nothing is done (a block nested in a guarded one)."""
        limit = self.no_answer_s
        if limit is None or not guarded:
            yield
            return
        _WATCHDOG.arm(conn, limit)
        try:
            yield
        except BaseException as exc:
            if _WATCHDOG.disarm(conn) and isinstance(exc, MeshUnusable | driver().Error):
                raise self._no_answer(limit) from None
            raise
        _WATCHDOG.disarm(conn)

    def _no_answer(self, limit: float) -> MeshUnusable:
        return MeshUnusable(
            f"the mesh database at {self.host} sent no answer for {limit:g} s, past its own "
            f"limits ([store] statement_timeout {self.statement_timeout:g} s, idle_timeout "
            f"{self.idle_timeout:g} s): the server is stopped, overloaded or cut off, and the "
            "operation was abandoned (a write may still land if the server resumes); check the "
            "server, then look before running it again",
            code="database-timeout",
        )

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
            with self.answering(conn):
                conn.execute(_ANNOUNCE, ([c for c, _ in unique], [p for _, p in unique]))
        except (psycopg.Error, MeshUnusable):
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
        self,
        exc: BaseException,
        *,
        connecting: bool = False,
        lost: bool = False,
        committing: bool = False,
        view: bool = False,
    ) -> MeshUnusable:
        """The one-line exit-4 error for a driver failure: what happened, on which host, and
        what to do. Never holds the password. `committing`: the failure came while a write
        was being committed (a COMMIT, or a write statement on its own), so a lost connection
        leaves its outcome unknown (`outcome_unknown`), not rolled back. `view`: it failed in a
        transaction the mesh opened READ ONLY itself (a write there is the mesh's bug, not the
        server's doing)."""
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
        if sqlstate == "25006" and (view or self.read_only):
            return MeshUnusable(
                f"{where} refused a write in a read-only view ({reason}); this is a bug: report it",
                code="database-read-only-view",
            )
        if sqlstate == "25006":
            return MeshUnusable(
                f"{where} accepts no writes ({reason}): the server is a read-only standby, or "
                "the role's or the URL's default_transaction_read_only is on; point the URL at "
                "the primary server, or turn it off (ALTER ROLE <role> SET "
                "default_transaction_read_only = off); mesh doctor checks it",
                code="database-read-only",
            )
        if sqlstate == "57014" and "statement timeout" in reason:
            return MeshUnusable(
                f"{where} did not finish a statement within [store] statement_timeout "
                f"({self.statement_timeout:g} s) ({reason}): the server is stalled or another "
                "session holds what the statement needs; nothing was half-done (the "
                "transaction rolled back): check the server (pg_stat_activity), or raise "
                "statement_timeout in the config file",
                code="database-timeout",
            )
        if sqlstate == "25P03" or "idle-in-transaction timeout" in reason:
            return MeshUnusable(
                f"{where} ended a transaction left idle past [store] idle_timeout "
                f"({self.idle_timeout:g} s) ({reason}); nothing was half-done (the transaction "
                "rolled back): run the command again, or raise idle_timeout in the config file",
                code="database-timeout",
            )
        if connecting:
            return StoreUnreachable(
                f"{where} is unreachable ({reason}); start the server, or fix the host and "
                "port in --mesh-url, DRASILL_MESH_URL or [store] url",
                code="database-unreachable",
            )
        lost = lost or (self._conn is not None and bool(self._conn.closed))
        if lost or sqlstate.startswith(("08", "57")):
            if committing:
                return self.outcome_unknown(reason)
            return StoreUnreachable(
                f"the connection to {where} was lost midway ({reason}); nothing was half-done "
                "(the transaction rolled back): check the server and run the command again",
                code="database-connection-lost",
                outcome="rolled-back",
                reason=reason,
            )
        return MeshUnusable(
            f"{where} failed ({reason}); run mesh doctor, and check the server's log",
            code="database-error",
        )

    def outcome_unknown(self, reason: str, check: str = CHECK_ANY) -> MeshUnusable:
        """The exit-4 error for a write whose connection was lost while it was being committed
        (issue 23 point 6): it may or may not have happened, and `check` says how to look
        before running the command again (which could otherwise do it twice)."""
        return MeshUnusable(
            f"the connection to the mesh database at {self.host} was lost while a change was "
            f"being committed ({reason}); it may or may not have happened: {check} before "
            "running the command again",
            code="database-outcome-unknown",
            outcome="unknown",
            reason=reason,
        )
