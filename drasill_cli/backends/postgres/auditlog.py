"""`AuditLog` for a PostgreSQL mesh: one `mesh_audit` row per event, in order of `seq`.

Appends take a transaction-scoped advisory lock before they draw their `seq`, so rows commit in
the order of their numbers: a reader that has seen `seq` N never later finds a smaller one
appear (`follow` reads on from the last number it gave). `at` is the event's own time (the
ISO stamp of the host that wrote it, for `read(since)` by index), `host` the host that
appended it, `details` the whole event. Each append announces a MESH change, which `follow`
waits on (LISTEN/NOTIFY, with the slow safety re-check of every watch). The oldest rows go
once the log outgrows what the directory mesh keeps (`audit.max_bytes` x (`audit.keep` + 1)).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock, liveness
from drasill_cli.storage.changes import MESH, SIGNALLED, STOPPED, Change

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend
    from drasill_cli.config import AuditConfig

# Rows read per transaction by `read` and `follow`.
PAGE = 1000
# The log is trimmed to its bound once in this many appends (the trim sums the row sizes).
TRIM_EVERY = 512
# How long `follow` waits on its watch between looks when nothing is notified.
FOLLOW_RECHECK_S = 30.0


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

    def append(self, event: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        text = json.dumps(event, ensure_ascii=False)
        scrubbed = self.backend.db.scrub(text)  # a password never reaches an audit line
        if scrubbed != text:
            event = json.loads(scrubbed)
        kind = event.get("event")
        actor = event.get("actor")
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext('drasill-audit'), hashtext(%s))",
                (self.backend.changes.schema,),
            )
            cur.execute(
                "INSERT INTO mesh_audit (at, event, actor, host, details)"
                " VALUES (coalesce(to_timestamp(%s), now()), %s, %s, %s, %s) RETURNING seq",
                (
                    _time_of(event),
                    kind if isinstance(kind, str) else "",
                    actor if isinstance(actor, str) else None,
                    liveness.hostname(),
                    Jsonb(event),
                ),
            )
            row = cur.fetchone()
            if row is not None and int(row[0]) % TRIM_EVERY == 0:
                self._trim(cur)
            self.backend.changes.notify(cur, Change(MESH))

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

    def _from(self, after: int, since: float | None) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """Every row after `after`, page by page (no transaction is open while yielding): its
        `seq`, and its event (None when unusable or before `since`)."""
        while True:
            rows = self._page(after, since)
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
        each wake-up reads on from the last `seq` given."""
        last = 0
        with self.backend.changes.watch(MESH) as watch:
            while True:
                for seq, event in self._from(last, since):
                    last = seq
                    if event is not None:
                        yield event
                if stop is not None and stop.is_set():
                    return
                seen = watch.next(FOLLOW_RECHECK_S, stop)
                if seen == STOPPED:
                    return
                if seen == SIGNALLED:
                    raise KeyboardInterrupt
