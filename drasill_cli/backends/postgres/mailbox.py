"""`Mailbox` for a PostgreSQL mesh: one row per delivered copy (`mesh_messages`), one per
message sent (`mesh_sent`).

- `deliver` inserts the recipient's unread copy and the sender's history row in one transaction
  and announces `inbox(recipient)` at commit: a killed sender leaves both or neither.
- `take_next` is one `UPDATE ... WHERE copy = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
  RETURNING body`: of any number of racing takers (processes, hosts or threads) exactly one
  turns each copy read; the others skip it and take the next.
- A copy's `created` is the time in its id, so take order (rank, created, id), newest-first
  listings (by id) and expiry (by the time in the id) follow the id as the directory mesh does.

Every body read goes through `check_message` (attachments' `path` from the reading host's cache,
`PostgresAttachments.path_in`); one that fails is moved to `mesh_quarantine` in the same
transaction and reported in `backend.warnings`, never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from drasill_cli import clock
from drasill_cli.backends.postgres.auditlog import RETURN_LINE, line
from drasill_cli.backends.postgres.ops import begin, forget, new_op, retried
from drasill_cli.models import RecordError
from drasill_cli.storage.changes import INBOXES, MESH, Change
from drasill_cli.storage.mailbox import ExpiredCopy, check_message, stored_form

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend
    from drasill_cli.backends.postgres.attachments import PostgresAttachments

_RANK = {"urgent": 0, "normal": 1}
# `unread` reads this many copies at first (a peek costs one), then pages grow up to the last.
_PAGES = (1, 16, 128, 512)
_TAKE_ORDER = "rank, created, id"


class _Row(NamedTuple):
    """A stored copy as read: where it is (for the report and quarantine) and its body."""

    table: str  # mesh_messages or mesh_sent
    key: Any  # `copy` (mesh_messages) or (sender, id) (mesh_sent)
    entry: str  # `inbox/NAME/STATE/ID` or `sent/NAME/ID`
    body: Any


def _inbox_entry(recipient: str, state: str, msg_id: str) -> str:
    return f"inbox/{recipient}/{state}/{msg_id}"


def _sent_entry(sender: str, msg_id: str) -> str:
    return f"sent/{sender}/{msg_id}"


def _copy_row(row: tuple[Any, ...]) -> _Row:
    """(copy, recipient, state, id, body) of mesh_messages as a `_Row`."""
    copy, recipient, state, msg_id, body = row
    return _Row("mesh_messages", copy, _inbox_entry(recipient, state, msg_id), body)


def _json(value: dict[str, Any]) -> Any:
    from psycopg.types.json import Json

    return Json(value)


class PostgresMailbox:
    def __init__(self, backend: PostgresBackend, attachments: PostgresAttachments) -> None:
        self.backend = backend
        self.attachments = attachments

    # ---- reading rows -----------------------------------------------------------------------

    def _checked(self, cur: psycopg.Cursor[Any], row: _Row) -> dict[str, Any] | None:
        """The message `row` holds, or None when it is not one (then quarantined)."""

        def local_path(msg_id: str, name: str) -> str:
            return self.attachments.path_in(cur, msg_id, name)

        try:
            message = check_message(row.body, local_path)
        except RecordError as exc:
            self._quarantine(cur, row, exc.reason)
            return None
        if message["id"] != row.entry.rpartition("/")[2]:
            self._quarantine(cur, row, "is not a message: it holds another message's id")
            return None
        return message

    def _quarantine(self, cur: psycopg.Cursor[Any], row: _Row, reason: str) -> None:
        """Move a damaged row to `mesh_quarantine` (kept, never deleted) and report it."""
        if self.backend.read_only:
            self.backend.warnings.append(
                f"damaged message {row.entry} ({reason}); left in place by a read-only run"
            )
            return
        if row.table == "mesh_messages":
            cur.execute("DELETE FROM mesh_messages WHERE copy = %s", (row.key,))
        else:
            cur.execute("DELETE FROM mesh_sent WHERE sender = %s AND id = %s", row.key)
        if cur.rowcount == 0:
            return  # another reader moved it first
        cur.execute(
            "INSERT INTO mesh_quarantine (kind, key, reason, raw) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            ("messages", row.entry, reason, _json(row.body)),
        )
        found = cur.fetchone()
        self.backend.warnings.append(
            f"quarantined {row.entry} ({reason}); it was moved to mesh_quarantine "
            f"(id {found[0] if found else '?'})"
        )

    def _usable(self, cur: psycopg.Cursor[Any], rows: list[_Row]) -> list[dict[str, Any]]:
        return [m for row in rows if (m := self._checked(cur, row)) is not None]

    def _newest(
        self, fetch: Callable[[psycopg.Cursor[Any], str | None, int], list[_Row]], limit: int
    ) -> list[dict[str, Any]]:
        """The usable messages `fetch(cur, below, n)` gives (newest id first, ids below
        `below`), one per id, at most `limit`: pages until enough or none are left."""
        found: dict[str, dict[str, Any]] = {}
        below: str | None = None
        if limit <= 0:
            return []
        with self.backend.transaction() as cur:
            while len(found) < limit:
                rows = fetch(cur, below, limit)
                for row in rows:
                    msg_id = row.entry.rpartition("/")[2]
                    if msg_id not in found and (message := self._checked(cur, row)) is not None:
                        found[msg_id] = message
                if len(rows) < limit:
                    break
                below = rows[-1].entry.rpartition("/")[2]
        return sorted(found.values(), key=lambda m: str(m["id"]), reverse=True)[:limit]

    # ---- the Mailbox interface --------------------------------------------------------------

    def deliver(self, message: dict[str, Any], event: dict[str, Any]) -> bool:
        """One statement: the copy (only if the recipient is registered), the history row and
        the audit row, or none of them. The recipient's row is read FOR KEY SHARE: a change of
        that agent under way (being retired, its unread mail archived) is waited for, and a
        removed agent gets nothing; heartbeats do not conflict.

        The message id is the operation's id: a second try (the connection was lost as the
        first committed, `retried`) inserts nothing and finds the first's copy."""
        return retried(
            self.backend,
            f"look with `mesh history {message['from']}` (is message {message['id']} there?)",
            lambda: self._deliver(message, event),
        )

    def _deliver(self, message: dict[str, Any], event: dict[str, Any]) -> bool:
        audit_log = self.backend.audit_log
        msg_id = message["id"]
        created = clock.id_time(msg_id)
        rows = self.backend.statement(
            "WITH copy AS (INSERT INTO mesh_messages (id, recipient, rank, created, body)"  # noqa: S608 -- constant fragments only; every value is a parameter
            "  SELECT %s, name, %s, coalesce(to_timestamp(%s), now()), %s"
            "  FROM mesh_agents WHERE name = %s FOR KEY SHARE"
            "  ON CONFLICT (recipient, id) DO NOTHING RETURNING id, created, body),"
            " sent AS (INSERT INTO mesh_sent (sender, id, created, body)"
            "  SELECT %s, id, created, body FROM copy), "
            + line("EXISTS (SELECT 1 FROM copy)")
            + RETURN_LINE,
            (
                *(msg_id, _RANK[message["priority"]], created, _json(stored_form(message))),
                message["to"],
                message["from"],
                *audit_log.values(event),
            ),
            Change(INBOXES, message["to"]),
            Change(MESH),
        )
        if rows:
            audit_log.appended(rows)
            return True
        # Nothing written: the recipient is not registered, or an earlier try of this same
        # send committed its copy (then it is delivered, once).
        found = self.backend.statement(
            "SELECT 1 FROM mesh_messages WHERE recipient = %s AND id = %s",
            (message["to"], msg_id),
        )
        if found:
            self.backend.changes.notify(Change(INBOXES, message["to"]), Change(MESH))
        return bool(found)

    def has_mailbox(self, agent: str) -> bool:
        with self.backend.transaction() as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM mesh_messages WHERE recipient = %s)", (agent,)
            ).fetchone()
        return bool(row and row[0])

    def owners(self) -> list[str]:
        with self.backend.transaction() as cur:
            rows = cur.execute(
                "SELECT DISTINCT recipient FROM mesh_messages ORDER BY recipient"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def take_next(self, agent: str) -> dict[str, Any] | None:
        """Each copy taken by one UPDATE; a damaged one is quarantined and the next taken.

        A second try (the connection was lost as the first committed, `retried`) gives
        back the copy the first took, so a taken message is never lost with its answer."""
        op = new_op("take")
        return retried(
            self.backend,
            f"look with `mesh history {agent}` (a message taken shows as read there)",
            lambda: self._take_next(op, agent),
        )

    def _take_next(self, op: str, agent: str) -> dict[str, Any] | None:
        with self.backend.transaction() as cur:
            done = begin(cur, op)
            if done is not None:
                if done.outcome is None:
                    return None
                row = cur.execute(
                    "SELECT copy, recipient, 'unread', id, body FROM mesh_messages WHERE copy = %s",
                    (done.outcome,),
                ).fetchone()
                return None if row is None else self._checked(cur, _copy_row(row))
            while True:
                row = cur.execute(
                    "WITH taken AS (UPDATE mesh_messages SET state = 'read', changed = now()"  # noqa: S608 -- constant fragments only; every value is a parameter
                    " WHERE copy = (SELECT copy FROM mesh_messages"
                    "  WHERE recipient = %s AND state = 'unread'"
                    f"  ORDER BY {_TAKE_ORDER} FOR UPDATE SKIP LOCKED LIMIT 1)"
                    " RETURNING copy, recipient, 'unread', id, body),"  # the state it was taken in
                    " noted AS (UPDATE mesh_ops SET outcome = to_jsonb(taken.copy)"
                    "  FROM taken WHERE op = %s)"
                    " SELECT * FROM taken",
                    (agent, op),
                ).fetchone()
                if row is None:
                    forget(cur, op)  # nothing taken: nothing to keep
                    return None
                message = self._checked(cur, _copy_row(row))
                if message is not None:
                    self.backend.changes.notify(Change(INBOXES, agent))
                    return message

    def last_taken(self, agent: str) -> dict[str, Any] | None:
        """The read copy taken last (`changed` is set when it is taken); a damaged one is
        quarantined and the one before it returned."""
        with self.backend.transaction() as cur:
            while True:
                row = cur.execute(
                    "SELECT copy, recipient, state, id, body FROM mesh_messages"
                    " WHERE recipient = %s AND state = 'read'"
                    " ORDER BY changed DESC, id DESC LIMIT 1",
                    (agent,),
                ).fetchone()
                if row is None:
                    return None
                message = self._checked(cur, _copy_row(row))
                if message is not None:
                    return message

    def unread(self, agent: str) -> Iterator[dict[str, Any]]:
        """Page by page in take order (keyset on rank, created, id), each page one short
        transaction: the first message costs one row however many wait."""
        after: tuple[Any, ...] | None = None
        for page in _pages():
            with self.backend.transaction() as cur:
                where = "" if after is None else f" AND ({_TAKE_ORDER}) > (%s, %s, %s)"
                rows = cur.execute(
                    "SELECT copy, recipient, state, id, body, rank, created"  # noqa: S608 -- constant fragments only; every value is a parameter
                    " FROM mesh_messages"
                    f" WHERE recipient = %s AND state = 'unread'{where}"
                    f" ORDER BY {_TAKE_ORDER} LIMIT %s",
                    (agent, *(after or ()), page),
                ).fetchall()
                messages = [self._checked(cur, _copy_row(row[:5])) for row in rows]
            yield from (m for m in messages if m is not None)
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last[5], last[6], last[3])

    def has_unread(self, agent: str) -> bool:
        with self.backend.transaction() as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM mesh_messages"
                " WHERE recipient = %s AND state = 'unread')",
                (agent,),
            ).fetchone()
        return bool(row and row[0])

    def unread_count(self, agent: str) -> int:
        with self.backend.transaction() as cur:
            row = cur.execute(
                "SELECT count(*) FROM mesh_messages WHERE recipient = %s AND state = 'unread'",
                (agent,),
            ).fetchone()
        return int(row[0]) if row else 0

    def history(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Sent rows and read copies, newest id first (a message to oneself once)."""

        def fetch(cur: psycopg.Cursor[Any], below: str | None, n: int) -> list[_Row]:
            bound = "" if below is None else " AND id < %s"
            extra = () if below is None else (below,)
            rows = cur.execute(
                "SELECT * FROM ("  # noqa: S608 -- constant fragments only; every value is a parameter
                f" (SELECT 0 AS read, copy, NULL, recipient, id, body FROM mesh_messages"
                f"  WHERE recipient = %s AND state = 'read'{bound} ORDER BY id DESC LIMIT %s)"
                " UNION ALL"
                f" (SELECT 1, NULL, sender, NULL, id, body FROM mesh_sent"
                f"  WHERE sender = %s{bound} ORDER BY id DESC LIMIT %s)"
                ") AS h ORDER BY id DESC, read LIMIT %s",
                (agent, *extra, n, agent, *extra, n, n),
            ).fetchall()
            return [
                _Row("mesh_messages", copy, _inbox_entry(recipient, "read", msg_id), body)
                if copy is not None
                else _Row("mesh_sent", (sender, msg_id), _sent_entry(sender, msg_id), body)
                for _, copy, sender, recipient, msg_id, body in rows
            ]

        return self._newest(fetch, limit)

    def receipts(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Sent rows, newest first, each joined to its recipient's copy: its `state`, and
        `changed` (when it was taken) for a read one."""
        found: list[dict[str, Any]] = []
        if limit <= 0:
            return found
        with self.backend.transaction() as cur:
            rows = cur.execute(
                "SELECT s.id, s.body, m.state, m.changed FROM mesh_sent AS s"
                " LEFT JOIN mesh_messages AS m"
                "  ON m.id = s.id AND m.recipient = (s.body::jsonb ->> 'to')"
                " WHERE s.sender = %s ORDER BY s.id DESC LIMIT %s",
                (agent, limit),
            ).fetchall()
            for msg_id, body, stored, changed in rows:
                row = _Row("mesh_sent", (agent, msg_id), _sent_entry(agent, msg_id), body)
                message = self._checked(cur, row)
                if message is None:
                    continue
                state = stored or "read"  # the copy left the unread mail and expired: read
                read_at = clock.iso(changed.timestamp()) if state == "read" and changed else None
                found.append({**message, "state": state, "read_at": read_at})
        return found

    def archived(self, agent: str, limit: int) -> list[dict[str, Any]]:
        def fetch(cur: psycopg.Cursor[Any], below: str | None, n: int) -> list[_Row]:
            bound = "" if below is None else " AND id < %s"
            rows = cur.execute(
                "SELECT copy, recipient, state, id, body FROM mesh_messages"  # noqa: S608 -- constant fragments only; every value is a parameter
                f" WHERE recipient = %s AND state = 'archived'{bound}"
                " ORDER BY id DESC LIMIT %s",
                (agent, *(() if below is None else (below,)), n),
            ).fetchall()
            return [_copy_row(row) for row in rows]

        return self._newest(fetch, limit)

    def find(self, msg_id: str) -> dict[str, Any] | None:
        with self.backend.transaction() as cur:
            copies = cur.execute(
                "SELECT copy, recipient, state, id, body FROM mesh_messages WHERE id = %s"
                " ORDER BY copy",
                (msg_id,),
            ).fetchall()
            rows = [_copy_row(row) for row in copies]
            sent = cur.execute(
                "SELECT sender, id, body FROM mesh_sent WHERE id = %s ORDER BY sender", (msg_id,)
            ).fetchall()
            rows += [_Row("mesh_sent", (s, i), _sent_entry(s, i), body) for s, i, body in sent]
            for row in rows:
                message = self._checked(cur, row)
                if message is not None:
                    return message
        return None

    def archive(self, agent: str) -> list[str]:
        """Every unread copy no taker holds, set archived in one UPDATE; the ids in take
        order. A damaged copy is quarantined, not archived."""
        with self.backend.transaction() as cur:
            rows = cur.execute(
                "UPDATE mesh_messages SET state = 'archived', changed = now()"
                " WHERE copy IN (SELECT copy FROM mesh_messages"
                "  WHERE recipient = %s AND state = 'unread' FOR UPDATE SKIP LOCKED)"
                " RETURNING copy, recipient, state, id, body, rank, created",
                (agent,),
            ).fetchall()
            rows.sort(key=lambda row: (row[5], row[6], row[3]))
            moved = [
                str(row[3]) for row in rows if self._checked(cur, _copy_row(row[:5])) is not None
            ]
            if rows:
                self.backend.changes.notify(Change(INBOXES, agent))
        return moved

    def expire_history(self, cutoff: float, *, apply: bool = True) -> list[ExpiredCopy]:
        """Read copies and sent rows whose id time is before `cutoff`; with `apply`, deleted
        in one transaction (the rows this call deleted: a concurrent expiry gets the others)."""
        verb = "DELETE FROM" if apply else "SELECT {cols} FROM"
        tail = " RETURNING {cols}" if apply else ""
        with self.backend.transaction() as cur:
            read = cur.execute(
                (
                    verb
                    + " mesh_messages WHERE state = 'read' AND created < to_timestamp(%s)"
                    + tail
                ).format(cols="recipient, id"),
                (cutoff,),
            ).fetchall()
            sent = cur.execute(
                (verb + " mesh_sent WHERE created < to_timestamp(%s)" + tail).format(
                    cols="sender, id"
                ),
                (cutoff,),
            ).fetchall()
            if apply and (read or sent):
                self.backend.changes.notify(Change(MESH))
        expired = [ExpiredCopy(_sent_entry(s, i), i, False) for s, i in sent]
        expired += [ExpiredCopy(_inbox_entry(r, "read", i), i, True) for r, i in read]
        return sorted(expired)


def _pages() -> Iterator[int]:
    yield from _PAGES
    while True:
        yield _PAGES[-1]
