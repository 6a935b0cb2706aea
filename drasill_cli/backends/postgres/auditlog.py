"""`AuditLog` for a PostgreSQL mesh: one `mesh_audit` row per event, numbered by `seq`.

An append is one statement (`PostgresBackend.statement`: one round trip, then its MESH
announcement), and appends never wait for each other, so many senders' commits share the server's
WAL flushes. Numbers are drawn before commit, so a reader can meet a row with a lower `seq`
after a higher one; `follow` keeps a floor below which everything has been given and gives
each row once (`_Place`). `at` is the event's own time (the ISO stamp of the host that wrote
it, for `read(since)` by index), `host` the host that appended it, `details` the whole event.
`follow` waits on MESH changes (LISTEN/NOTIFY, with the slow safety re-check of every watch).
The oldest rows go once the log outgrows what the directory mesh keeps (`audit.max_bytes` x
(`audit.keep` + 1))."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock, liveness
from drasill_cli.backends.postgres.connection import LISTENED
from drasill_cli.storage.changes import MESH, SIGNALLED, STOPPED, Change

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend
    from drasill_cli.config import AuditConfig

# Rows read per transaction by `read` and `follow`.
PAGE = 1000
# The log is trimmed to its bound once in this many appends (the trim sums the row sizes).
TRIM_EVERY = 512


def line(condition: str = "true") -> str:
    """The WITH clause `line` that appends one event's row (parameters: `values`) when
    `condition` (SQL) holds."""
    return (
        "line AS (INSERT INTO mesh_audit (at, event, actor, host, details)"
        " SELECT coalesce(to_timestamp(%s), now()), %s, %s, %s, %s"
        f" WHERE {condition} RETURNING seq)"
    )


# What a statement ending in `line` returns: the row's `seq`, and who listens (`LISTENED`).
RETURN_LINE = f" SELECT seq, {LISTENED} FROM line"  # noqa: S608 -- constant fragments only
# How long `follow` waits on its watch between looks when nothing is notified.
FOLLOW_RECHECK_S = 30.0
# How `follow` passes a gap in `seq` (`_Place`): once the transactions running when it was
# seen have ended, and no sooner than GAP_MIN_S after; after GAP_MAX_S whatever runs.
GAP_MIN_S = 1.0
GAP_MAX_S = 300.0


def _time_of(event: dict[str, Any]) -> float | None:
    try:
        return clock.parse_iso(str(event.get("time")))
    except ValueError:
        return None


def _usable(event: Any) -> bool:
    """Whether a stored `details` value is an event (as the directory mesh's `parse_line`)."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("time"), str)
        and isinstance(event.get("event"), str)
        and isinstance(event.get("actor"), str | None)
    )


def _after(event: dict[str, Any], since: float | None) -> bool:
    if since is None:
        return True
    at = _time_of(event)
    return at is not None and at >= since


class PostgresAuditLog:
    def __init__(self, backend: PostgresBackend, config: AuditConfig) -> None:
        self.backend = backend
        self.config = config

    # ---- writing -------------------------------------------------------------------------

    def values(self, event: dict[str, Any]) -> tuple[Any, ...]:
        """The parameters of `line` for `event` (a password never reaches the log)."""
        from psycopg.types.json import Jsonb

        db = self.backend.db
        if db.has_password:
            text = json.dumps(event, ensure_ascii=False)
            scrubbed = db.scrub(text)
            if scrubbed != text:
                event = json.loads(scrubbed)
        kind = event.get("event")
        actor = event.get("actor")
        return (
            _time_of(event),
            kind if isinstance(kind, str) else "",
            actor if isinstance(actor, str) else None,
            liveness.hostname(),
            Jsonb(event),
        )

    def appended(self, rows: list[tuple[Any, ...]]) -> None:
        """After a statement that ends in `line` (its `seq` returned): now and then, the
        oldest rows trimmed."""
        if rows and int(rows[0][0]) % TRIM_EVERY == 0:
            with self.backend.transaction() as cur:
                self._trim(cur)

    def append(self, event: dict[str, Any]) -> None:
        self.appended(
            self.backend.statement("WITH " + line() + RETURN_LINE, self.values(event), Change(MESH))
        )

    def _trim(self, cur: psycopg.Cursor[Any]) -> None:
        """Drop the oldest events beyond the bound the directory mesh keeps."""
        bound = self.config.max_bytes * (self.config.keep + 1)
        cur.execute(
            "DELETE FROM mesh_audit WHERE seq <= ("
            " SELECT seq FROM (SELECT seq, sum(pg_column_size(details))"
            "  OVER (ORDER BY seq DESC) AS total FROM mesh_audit) AS newest"
            " WHERE total > %s ORDER BY seq DESC LIMIT 1)",
            (bound,),
        )

    # ---- reading -------------------------------------------------------------------------

    def _page(self, after: int, since: float | None) -> list[tuple[int, dict[str, Any]]]:
        """Up to PAGE events with `seq` above `after`, in order (unusable rows skipped). The
        `at` index narrows by `since`; each event's own time decides, as on a directory mesh."""
        with self.backend.transaction() as cur:
            if since is None:
                cur.execute(
                    "SELECT seq, details FROM mesh_audit WHERE seq > %s ORDER BY seq LIMIT %s",
                    (after, PAGE),
                )
            else:
                cur.execute(
                    "SELECT seq, details FROM mesh_audit WHERE seq > %s"
                    " AND at >= to_timestamp(%s) - interval '1 second' ORDER BY seq LIMIT %s",
                    (after, since, PAGE),
                )
            rows = cur.fetchall()
        return [(int(seq), details) for seq, details in rows]

    def _from(
        self,
        after: int,
        since: float | None,
        page: Callable[[int, float | None], list[tuple[int, dict[str, Any]]]] | None = None,
    ) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Every row after `after`, page by page (no transaction is open while yielding): its
        `seq`, and its event (None when unusable or before `since`). `page` reads a page
        (`_page`, unless given)."""
        page = page or self._page
        while True:
            rows = page(after, since)
            for seq, details in rows:
                wanted = _usable(details) and _after(details, since)
                yield seq, (details if wanted else None)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        for _seq, event in self._from(0, since):
            if event is not None:
                yield event

    def _snapshot(self) -> tuple[int, int]:
        """The server's transaction horizon now: (xmin, xmax) of a fresh snapshot."""
        rows = self.backend.statement(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
            " FROM pg_current_snapshot() AS s"
        )
        return int(rows[0][0]), int(rows[0][1])

    def latest(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        with self.backend.transaction() as cur:
            cur.execute("SELECT details FROM mesh_audit ORDER BY seq DESC LIMIT %s", (limit,))
            rows = cur.fetchall()
        return [details for (details,) in rows if _usable(details)]

    def follow(
        self, since: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """The watch is entered before the first read, so an append in between still wakes it;
        each wake-up reads the rows past `_Place.floor` and gives those not given before."""
        from drasill_cli.waiting import enduring

        place = _Place()
        patience = self.backend.db.reconnect_timeout  # across a restart of the server

        def page(after: int, since: float | None) -> list[tuple[int, dict[str, Any]]]:
            return enduring(lambda: self._page(after, since), patience)

        with self.backend.changes.watch(MESH) as watch:
            while True:
                for seq, event in self._from(place.floor, since, page):
                    if place.take(seq) and event is not None:
                        yield event
                place.settle(time.monotonic(), *enduring(self._snapshot, patience))
                if stop is not None and stop.is_set():
                    return
                seen = watch.next(FOLLOW_RECHECK_S, stop)
                if seen == STOPPED:
                    return
                if seen == SIGNALLED:
                    raise KeyboardInterrupt


class _Place:
    """How far `follow` has read. Appends do not wait for each other, so a row can commit after
    one with a higher `seq`: every `seq` up to `floor` is settled (given, or known never to
    come) and `given` holds those given above it.

    The gaps below the highest `seq` given (numbers drawn by appends not committed yet, or by
    ones rolled back) are settled together once every transaction that was running when they
    were seen had ended before a look at the rows: a number that look did not find was rolled
    back. That is read from the server's snapshot taken after each look: its `xmax` marks the
    transactions running when the gaps were seen, and the `xmin` of the one before a look
    says whether they had all ended by then. Asked no sooner than `GAP_MIN_S` after (a number
    is drawn a moment before its transaction has an id); a transaction of another program
    left open for `GAP_MAX_S` is not waited for longer. The rows below the first one read are
    settled at once (trimmed, or rolled back).
    """

    def __init__(self) -> None:
        self.floor = 0
        self.given: set[int] = set()
        self.started = False
        # The gaps being waited for: up to which `seq`, the snapshot's xmax, and since when.
        self.pending: tuple[int, int, float] | None = None
        # The xmin of the snapshot taken after the previous look, so before this look's rows.
        self.xmin_before = 0

    def take(self, seq: int) -> bool:
        """Whether the row `seq` is new to this reader (then it counts as given)."""
        if not self.started:
            self.started = True
            self.floor = seq - 1
        if seq <= self.floor or seq in self.given:
            return False
        self.given.add(seq)
        return True

    def _rise(self) -> None:
        while self.floor + 1 in self.given:
            self.floor += 1
            self.given.discard(self.floor)

    def settle(self, now: float, xmin: int, xmax: int) -> None:
        """After a look, with the server's snapshot taken after it (`xmin`, `xmax`): raise the
        floor past what is given and past the gaps whose transactions had all ended before
        this look read the rows. A first look that found nothing leaves every later `seq` to
        be waited for."""
        self.started = True
        self._rise()
        ended_before_look, self.xmin_before = self.xmin_before, xmin
        if self.pending is not None and self.pending[0] <= self.floor:
            self.pending = None  # its gaps were filled: nothing left to wait for
        if self.pending is not None:
            upto, horizon, since = self.pending
            waited = now - since
            if (ended_before_look >= horizon and waited >= GAP_MIN_S) or waited >= GAP_MAX_S:
                self.floor = max(self.floor, upto)
                self.given = {seq for seq in self.given if seq > self.floor}
                self.pending = None
                self._rise()
        if self.pending is None and self.given:  # gaps below the highest given
            self.pending = (max(self.given), xmax, now)
