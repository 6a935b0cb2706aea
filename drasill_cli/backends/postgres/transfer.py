"""`Transfer` for the PostgreSQL mesh: every row as an item, and back.

Each `restore` is one transaction of its own and idempotent by the tables' keys
(`INSERT ... ON CONFLICT DO NOTHING`): a second import, or one rerun after a connection was lost
midway, adds only what is missing. Locks, wake state and the audit log go through their
interfaces (shared with the directory mesh in `storage.transfer`), so their keys (a lock's
path key, a wake row's host) are decided in one place.

Every statement is in `SQL` below (the merger of the other interfaces adjusts columns there).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from drasill_cli.models import AgentRecord, RecordError, Task
from drasill_cli.storage.attachments import is_attachment_name
from drasill_cli.storage.budgets import check_pause, check_warning
from drasill_cli.storage.changes import AGENTS, INBOXES, TASKS, Change
from drasill_cli.storage.mailbox import check_message, is_message_id, stored_form
from drasill_cli.storage.transfer import (
    ATTACHMENT_CHUNK,
    AuditRestorer,
    attachment_bytes,
    audit_items,
    lock_items,
    message_items,
    meta_item,
    restore_lock,
    restore_wake,
    streamed_attachment_item,
    wake_items,
)

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

_RANK = {"urgent": 0, "normal": 1}

SQL = {
    # ---- dump ----
    # The server's `written_by` (which role wrote it) stays behind: it names this server's roles.
    "agents": (
        "SELECT name, CASE WHEN jsonb_typeof(record) = 'object' THEN record - 'written_by'"
        " ELSE record END, extract(epoch FROM heartbeat)::float8"
        " FROM mesh_agents ORDER BY name"
    ),
    "attachments": "SELECT message_id, name FROM mesh_attachments ORDER BY message_id, name",
    # An attachment's content a chunk at a time (`substring` counts bytes from 1).
    "attachment_chunk": (
        "SELECT substring(data FROM %(start)s FOR %(count)s) FROM mesh_attachments"
        " WHERE message_id = %(message_id)s AND name = %(name)s"
    ),
    "copies": "SELECT state, body FROM mesh_messages ORDER BY id, recipient",
    "sent": "SELECT body FROM mesh_sent ORDER BY id",
    "tasks": "SELECT id, record FROM mesh_tasks ORDER BY number",
    "sequence": (
        "SELECT greatest((SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
        " FROM mesh_task_numbers), (SELECT coalesce(max(number), 0) FROM mesh_tasks))"
    ),
    "budgets": (
        "SELECT agent, state, record - 'written_by' FROM mesh_budgets ORDER BY state DESC, agent"
    ),
    # ---- restore ----
    "agent": (
        "INSERT INTO mesh_agents (name, host, record, heartbeat)"
        " VALUES (%(name)s, %(host)s, %(record)s,"
        " coalesce(to_timestamp(%(last_seen)s), %(registered_at)s::timestamptz))"
        " ON CONFLICT (name) DO NOTHING RETURNING name"
    ),
    "attachment": (
        "INSERT INTO mesh_attachments (message_id, name, size, sha256, data)"
        " VALUES (%(message_id)s, %(name)s, %(size)s, %(sha256)s, %(data)s)"
        " ON CONFLICT (message_id, name) DO NOTHING RETURNING name"
    ),
    "copy": (
        "INSERT INTO mesh_messages (id, recipient, state, rank, created, body)"
        " VALUES (%(id)s, %(to)s, %(state)s, %(rank)s, %(created)s::timestamptz, %(body)s)"
        " ON CONFLICT (recipient, id) DO NOTHING RETURNING copy"
    ),
    "sent_copy": (
        "INSERT INTO mesh_sent (sender, id, created, body)"
        " VALUES (%(from)s, %(id)s, %(created)s::timestamptz, %(body)s)"
        " ON CONFLICT (sender, id) DO NOTHING RETURNING id"
    ),
    "task": (
        "INSERT INTO mesh_tasks (id, number, state, priority, claimed_by, created, updated, record)"
        " VALUES (%(id)s, %(number)s, %(state)s, %(priority)s, %(claimed_by)s,"
        " %(created)s::timestamptz, %(updated)s::timestamptz, %(record)s)"
        " ON CONFLICT DO NOTHING RETURNING id"
    ),
    # The sequence never goes backwards: moved only when `last` is above what it handed out.
    "raise_sequence": (
        "SELECT setval('mesh_task_numbers', %(last)s) FROM mesh_task_numbers"
        " WHERE %(last)s > CASE WHEN is_called THEN last_value ELSE 0 END"
    ),
    "budget": (
        "INSERT INTO mesh_budgets (agent, host, state, record)"
        " VALUES (%(agent)s, coalesce((SELECT host FROM mesh_agents WHERE name = %(agent)s),"
        " %(host)s), %(state)s, %(record)s)"
        " ON CONFLICT (agent, state) DO NOTHING RETURNING agent"
    ),
    "guard": "SELECT name FROM mesh_guards WHERE name = %s FOR UPDATE",
}
_BUDGET_STATES = {"budget-warning": "warned", "budget-pause": "paused"}
_BUDGET_KINDS = {state: kind for kind, state in _BUDGET_STATES.items()}


def _json(value: dict[str, Any]) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _json_text(value: dict[str, Any]) -> Any:
    """A message for its `json` column, kept as written: any text a body may hold, U+0000
    included (`jsonb` cannot hold that, so never a message through `_json`)."""
    from psycopg.types.json import Json

    return Json(value)


class _Dropped(Exception):
    """An attachment row deleted while it was being exported."""


def _no_path(_msg_id: str, _name: str) -> str:
    return ""


class PostgresTransfer:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    @cached_property
    def _audit(self) -> AuditRestorer:
        return AuditRestorer(self.backend.audit_log)

    def _rows(self, name: str) -> list[tuple[Any, ...]]:
        with self.backend.transaction() as cur:
            cur.execute(SQL[name])
            return list(cur.fetchall())

    def _skipped(self, what: str, exc: RecordError) -> None:
        self.backend.warnings.append(f"export skipped {what}: it {exc.reason}")

    # ---- dump ------------------------------------------------------------------------------

    def dump(self) -> Iterator[dict[str, Any]]:
        backend = self.backend
        yield meta_item(backend.kind)
        for name, record, last_seen in self._rows("agents"):
            try:
                checked = AgentRecord.check(record)
            except RecordError as exc:
                self._skipped(f"an agent row {name!r}", exc)
                continue
            yield {"kind": "agent", "record": checked, "last_seen": last_seen}
        for msg_id, name in self._rows("attachments"):
            if not is_message_id(msg_id) or not is_attachment_name(name):
                reason = "has a malformed message id or name"
                self._skipped(f"an attachment row {msg_id!r}/{name!r}", RecordError(reason))
                continue
            item = self._attachment(str(msg_id), str(name))
            if item is not None:
                yield item
        yield from self._messages()
        for task_id, record in self._rows("tasks"):
            try:
                task = Task.from_record(record)
            except RecordError as exc:
                self._skipped(f"a task row {task_id!r}", exc)
                continue
            yield {"kind": "task", "record": task.to_record()}
        yield {"kind": "task-sequence", "last": int(self._rows("sequence")[0][0])}
        yield from lock_items(backend.locks)
        yield from self._budgets()
        yield from wake_items(backend.wake_book)
        yield from audit_items(backend.audit_log.read())

    def _attachment(self, msg_id: str, name: str) -> dict[str, Any] | None:
        """One attachment row as an item, its content fetched a chunk at a time in one
        transaction (a consistent row); None when it was dropped meanwhile."""
        with self.backend.transaction() as cur:

            def chunks() -> Iterator[bytes]:
                start = 1
                while True:
                    row = cur.execute(
                        SQL["attachment_chunk"],
                        {
                            "start": start,
                            "count": ATTACHMENT_CHUNK,
                            "message_id": msg_id,
                            "name": name,
                        },
                    ).fetchone()
                    if row is None:
                        raise _Dropped
                    chunk = bytes(row[0])
                    if chunk:
                        yield chunk
                    if len(chunk) < ATTACHMENT_CHUNK:
                        return
                    start += len(chunk)

            try:
                return streamed_attachment_item(msg_id, name, chunks())
            except _Dropped:
                return None

    def _messages(self) -> Iterator[dict[str, Any]]:
        return message_items(self._copies())

    def _copies(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, message) of each stored copy: a recipient's state, or "sent"."""
        for state, body in self._rows("copies"):
            message = self._message(body)
            if message is not None:
                yield state, message
        for (body,) in self._rows("sent"):
            message = self._message(body)
            if message is not None:
                yield "sent", message

    def _message(self, body: Any) -> dict[str, Any] | None:
        try:
            return stored_form(check_message(body, _no_path))
        except RecordError as exc:
            self._skipped("a message row", exc)
            return None

    def _budgets(self) -> Iterator[dict[str, Any]]:
        rows = self._rows("budgets")
        for state in ("warned", "paused"):  # the order of storage.transfer.KINDS
            for agent, row_state, record in rows:
                if row_state != state:
                    continue
                try:
                    (check_warning if state == "warned" else check_pause)(record)
                except RecordError as exc:
                    self._skipped(f"a budget row of {agent!r}", exc)
                    continue
                yield {"kind": _BUDGET_KINDS[state], "agent": agent, "record": record}

    # ---- restore ---------------------------------------------------------------------------

    def restore(self, item: dict[str, Any]) -> bool:
        kind = item["kind"]
        if kind == "meta":
            return False
        if kind in self._through_interfaces:
            return self._through_interfaces[kind](item)
        with self.backend.transaction() as cur:
            return self._in_transaction[kind](cur, item)

    @cached_property
    def _through_interfaces(self) -> dict[str, Callable[[dict[str, Any]], bool]]:
        backend = self.backend
        return {
            "lock": lambda item: restore_lock(backend.locks, item["record"]),
            "wake": lambda item: restore_wake(backend.wake_book, item["agent"], item["record"]),
            "audit": lambda item: self._audit.restore(item),  # noqa: PLW0108 -- the audit log is reached only when an audit item comes
        }

    @cached_property
    def _in_transaction(self) -> dict[str, Callable[[psycopg.Cursor[Any], dict[str, Any]], bool]]:
        return {
            "agent": self._restore_agent,
            "attachment": self._restore_attachment,
            "message": self._restore_message,
            "task": lambda cur, item: self._restore_task(cur, Task.from_record(item["record"])),
            "task-sequence": self._restore_sequence,
            "budget-warning": self._restore_budget,
            "budget-pause": self._restore_budget,
        }

    def _insert(self, cur: psycopg.Cursor[Any], name: str, values: dict[str, Any]) -> bool:
        cur.execute(SQL[name], values)
        return cur.fetchone() is not None

    def _restore_agent(self, cur: psycopg.Cursor[Any], item: dict[str, Any]) -> bool:
        record = item["record"]
        values = {
            "name": record["name"],
            "host": record["host"],
            "record": _json(record),
            "last_seen": item["last_seen"],
            "registered_at": record["registered_at"],
        }
        done = self._insert(cur, "agent", values)
        if done:
            self.backend.changes.notify(Change(AGENTS, record["name"]))
        return done

    def _restore_attachment(self, cur: psycopg.Cursor[Any], item: dict[str, Any]) -> bool:
        values = {
            "message_id": item["message_id"],
            "name": item["name"],
            "size": item["size"],
            "sha256": item["sha256"],
            "data": attachment_bytes(item),
        }
        return self._insert(cur, "attachment", values)

    def _restore_sequence(self, cur: psycopg.Cursor[Any], item: dict[str, Any]) -> bool:
        cur.execute(SQL["guard"], ("tasks",))
        return self._insert(cur, "raise_sequence", {"last": item["last"]})

    def _restore_budget(self, cur: psycopg.Cursor[Any], item: dict[str, Any]) -> bool:
        values = {
            "agent": item["agent"],
            "host": socket.gethostname(),
            "state": _BUDGET_STATES[item["kind"]],
            "record": _json(item["record"]),
        }
        return self._insert(cur, "budget", values)

    def _restore_message(self, cur: psycopg.Cursor[Any], item: dict[str, Any]) -> bool:
        message = item["message"]
        values = {
            "id": message["id"],
            "to": message["to"],
            "from": message["from"],
            "state": item["state"],
            "rank": _RANK[message["priority"]],
            "created": message["created_at"],
            "body": _json_text(message),
        }
        wrote = item["state"] is not None and self._insert(cur, "copy", values)
        if wrote and item["state"] == "unread":
            self.backend.changes.notify(Change(INBOXES, message["to"]))
        if item["sent"]:
            wrote = self._insert(cur, "sent_copy", values) or wrote
        return wrote

    def _restore_task(self, cur: psycopg.Cursor[Any], task: Task) -> bool:
        from drasill_cli.storage.board import id_number

        cur.execute(SQL["guard"], ("tasks",))  # the numbering guard: no `add` meanwhile
        number = id_number(task.id)
        values = {
            "id": task.id,
            "number": number,
            "state": task.state,
            "priority": task.priority,
            "claimed_by": task.claimed_by,
            "created": task.created_at,
            "updated": task.updated_at,
            "record": _json(task.to_record()),
        }
        if not self._insert(cur, "task", values):
            return False
        # No sequence move here: `add` numbers above every stored task anyway, and the
        # `task-sequence` item carries the numbers handed out (as on a directory mesh).
        self.backend.changes.notify(Change(TASKS))
        return True
