"""`Transfer`: every stored thing of a mesh as JSON-able items, and back (`mesh export/import`).

An item is a dict with a `kind` (the order below is the order `dump` yields them in, so that a
restore in that order finds what an item leans on: a message's attachments before the message,
agents before their budget records):

| kind | keys |
| --- | --- |
| `meta` | `format` (FORMAT), `source` (the backend kind it came from), `exported_at` |
| `agent` | `record` (models.AgentRecord), `last_seen` (epoch seconds, or null) |
| `attachment` | `message_id`, `name`, `size`, `sha256`, `content` (base64) |
| `message` | `message` (stored form), `state`, `sent` (see below) |
| `task` | `record` (models.Task, its id kept) |
| `task-sequence` | `last`: the last task number handed out (never goes backwards) |
| `lock` | `record` (check_lock) |
| `budget-warning` / `budget-pause` | `agent`, `record` (check_warning / check_pause) |
| `wake` | `agent`, `record` (`mesh watch`'s wake state) |
| `audit` | `event`, `nth` (see below) |

A message's `state` is its recipient's copy (`unread`, `read`, `archived`, or null when only
the sender's copy is left) and `sent` whether the sender's history copy is kept. An audit item's
`nth` says it is the nth event of the log with this very content: two equal events stay two,
and a second import adds neither.

`restore(item)` is idempotent: an item already there is skipped (False); a message copy is
never made twice, a task keeps its id, the sequence never goes backwards. Every item passes
`check_item` (the same `models` checks every stored record passes, and the bounds every backend
can keep: times up to year 9999, task numbers up to MAX_TASK_NUMBER, no U+0000 in a record a
database keeps as `jsonb`, nesting within MAX_ITEM_DEPTH) before anything is written, so a
checked item never fails a backend halfway through an import.

`dump` reads an attachment in chunks of ATTACHMENT_CHUNK (`streamed_attachment_item`), never
through the record bound. An entry it cannot read (a FIFO, link or folder where a file belongs,
a row or record that fails its check) is left out and said in `Backend.warnings` as
"export skipped ...", and the dump goes on: only an error of the store itself ends it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from drasill_cli import clock
from drasill_cli.models import (
    AgentRecord,
    RecordError,
    Task,
    WakeRecord,
    is_agent_name,
    nests_within,
)
from drasill_cli.storage.attachments import is_attachment_name
from drasill_cli.storage.board import MAX_TASK_NUMBER, PRIORITY_LIMIT, id_number
from drasill_cli.storage.budgets import check_pause, check_warning
from drasill_cli.storage.locktable import LockChanges, check_lock
from drasill_cli.storage.mailbox import check_message, is_message_id, stored_form

if TYPE_CHECKING:
    from drasill_cli.storage.auditlog import AuditLog
    from drasill_cli.storage.locktable import LockTable
    from drasill_cli.storage.wakebook import WakeBook

FORMAT = 1
KINDS = (
    "meta",
    "agent",
    "attachment",
    "message",
    "task",
    "task-sequence",
    "lock",
    "budget-warning",
    "budget-pause",
    "wake",
    "audit",
)
MESSAGE_STATES = ("unread", "read", "archived")
# The last second every backend can keep a time for (9999-12-31T23:59:59Z, as Python's own).
MAX_EPOCH = 253_402_300_799
# How deep an item may nest (a record's extra keys nest at most models.MAX_EXTRA_DEPTH below).
MAX_ITEM_DEPTH = 24
# The kinds whose records a database keeps as `jsonb`, which cannot hold U+0000: refused there
# on every backend alike (a message keeps any text: its rows are `json`, its files JSON).
_NO_NUL_KINDS = frozenset(
    {"agent", "task", "lock", "budget-warning", "budget-pause", "wake", "audit"}
)


class Transfer(Protocol):
    def dump(self) -> Iterator[dict[str, Any]]:
        """Every stored thing, one JSON-able item each, in the order of `KINDS`; a `meta`
        item first. A damaged entry is skipped and said in the backend's warnings."""
        ...

    def restore(self, item: dict[str, Any]) -> bool:
        """Store one item that passed `check_item`; False when it was there already (nothing
        written). Each item is its own operation (one transaction on a database)."""
        ...


# ---- checking one item ----------------------------------------------------------------------


def _no_path(_msg_id: str, _name: str) -> str:
    return ""


def _name(value: Any, what: str) -> str:
    if not is_agent_name(value):
        raise RecordError(f"has {what} {value!r}, which is not an agent name")
    return str(value)


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds U+0000 in any string (a key included); iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _record(item: dict[str, Any], key: str = "record") -> dict[str, Any]:
    value = item.get(key)
    if not isinstance(value, dict):
        raise RecordError(f"has no `{key}` object")
    return value


def _number_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def attachment_bytes(item: dict[str, Any]) -> bytes:
    """The content of an attachment item, checked against its size and sha256."""
    content = item.get("content")
    if not isinstance(content, str):
        raise RecordError("has no base64 `content`")
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise RecordError("has a `content` that is not base64") from None
    if item.get("size") != len(data):
        raise RecordError(f"says size {item.get('size')!r} but holds {len(data)} bytes")
    if item.get("sha256") != hashlib.sha256(data).hexdigest():
        raise RecordError("has content whose sha256 is not the one it names")
    return data


def attachment_item(msg_id: str, name: str, data: bytes) -> dict[str, Any]:
    return streamed_attachment_item(msg_id, name, [data])


# An attachment is read in chunks of this many bytes (a multiple of 3: each chunk's base64
# joins the next one's without padding in between).
ATTACHMENT_CHUNK = 3 * 256 * 1024


def streamed_attachment_item(
    msg_id: str, name: str, chunks: Iterable[bytes], limit: int | None = None
) -> dict[str, Any]:
    """An attachment item from its content in chunks (each a multiple of 3 bytes but the
    last), hashed and encoded as they come: the bytes are never held whole. RecordError when
    the content is over `limit` bytes."""
    hasher = hashlib.sha256()
    encoded: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if limit is not None and size > limit:
            raise RecordError(f"is over {limit} bytes, more than any attachment may be")
        hasher.update(chunk)
        encoded.append(base64.b64encode(chunk).decode("ascii"))
    return {
        "kind": "attachment",
        "message_id": msg_id,
        "name": name,
        "size": size,
        "sha256": hasher.hexdigest(),
        "content": "".join(encoded),
    }


def meta_item(source: str) -> dict[str, Any]:
    return {"kind": "meta", "format": FORMAT, "source": source, "exported_at": clock.iso()}


def _check_meta(raw: dict[str, Any]) -> None:
    if raw.get("format") != FORMAT:
        raise RecordError(f"is format {raw.get('format')!r}; this mesh reads format {FORMAT}")


def _check_agent(raw: dict[str, Any]) -> None:
    raw["record"] = AgentRecord.check(_record(raw))
    last_seen = raw.get("last_seen")
    if not _number_or_none(last_seen) or not 0 <= (last_seen or 0) <= MAX_EPOCH:
        raise RecordError("has a `last_seen` that is not epoch seconds (up to year 9999) or null")
    raw["last_seen"] = raw.get("last_seen")  # none given: no heartbeat yet


def _check_attachment(raw: dict[str, Any]) -> None:
    if not isinstance(raw.get("message_id"), str) or not is_message_id(raw["message_id"]):
        raise RecordError(f"has a bad message_id {raw.get('message_id')!r}")
    if not isinstance(raw.get("name"), str) or not is_attachment_name(raw["name"]):
        raise RecordError(f"has an unusable file name {raw.get('name')!r}")
    attachment_bytes(raw)


def _check_message(raw: dict[str, Any]) -> None:
    message = {"attachments": [], **_record(raw, "message")}  # as every stored message has
    raw["message"] = stored_form(check_message(message, _no_path))
    if raw.get("state") not in (*MESSAGE_STATES, None):
        raise RecordError(f"has a state {raw.get('state')!r}, not unread, read or archived")
    if not isinstance(raw.get("sent"), bool):
        raise RecordError("has no boolean `sent`")
    if raw["state"] is None and not raw["sent"]:
        raise RecordError("keeps neither a recipient's copy nor the sender's")


def _check_task(raw: dict[str, Any]) -> None:
    task = Task.from_record(_record(raw))
    number = id_number(task.id)
    if number is None:
        raise RecordError(f"has task id {task.id!r}, not a numbered id like t-0007")
    if number > MAX_TASK_NUMBER:
        raise RecordError(f"has task id {task.id!r}, above the highest task number")
    if not -PRIORITY_LIMIT <= task.priority <= PRIORITY_LIMIT:
        raise RecordError(f"has a priority outside -{PRIORITY_LIMIT}..{PRIORITY_LIMIT}")
    raw["record"] = task.to_record()


def _check_sequence(raw: dict[str, Any]) -> None:
    last = raw.get("last")
    if not isinstance(last, int) or isinstance(last, bool) or not 0 <= last <= MAX_TASK_NUMBER:
        raise RecordError(
            f"has `last` {str(last)[:40]}, not a task number from 0 to {MAX_TASK_NUMBER}"
        )


def _check_lock(raw: dict[str, Any]) -> None:
    raw["record"] = check_lock(_record(raw))


def _agent_record(check: Callable[[Any], object] | None) -> Callable[[dict[str, Any]], None]:
    """The check of an item that is one agent's record (`agent`, `record`)."""

    def checked(raw: dict[str, Any]) -> None:
        _name(raw.get("agent"), "agent")
        record = _record(raw)
        if check is not None:
            check(record)

    return checked


def _check_event(raw: dict[str, Any]) -> None:
    event = _record(raw, "event")
    if not isinstance(event.get("time"), str) or not isinstance(event.get("event"), str):
        raise RecordError("has an event without a `time` and an `event` string")
    try:
        clock.parse_iso(event["time"][:64])
    except (ValueError, OverflowError, OSError):
        raise RecordError(f"has an event whose time {event['time'][:40]!r} is no time") from None
    if not isinstance(event.get("actor"), str | None):
        raise RecordError("has an event whose `actor` is not a name or null")
    nth = raw.get("nth")
    if not isinstance(nth, int) or isinstance(nth, bool) or nth < 1:
        raise RecordError(f"has `nth` {nth!r}, not a count from 1")


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "meta": _check_meta,
    "agent": _check_agent,
    "attachment": _check_attachment,
    "message": _check_message,
    "task": _check_task,
    "task-sequence": _check_sequence,
    "lock": _check_lock,
    "budget-warning": _agent_record(check_warning),
    "budget-pause": _agent_record(check_pause),
    "wake": _agent_record(WakeRecord.check),
    "audit": _check_event,
}


def check_item(raw: Any) -> dict[str, Any]:
    """`raw` as an item `restore` may write (records validated, defaults filled in), or
    RecordError naming what is wrong."""
    if not isinstance(raw, dict):
        raise RecordError("is not a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        shown = kind[:40] if isinstance(kind, str) else kind
        raise RecordError(f"has an unknown kind {shown!r}; known kinds: {', '.join(KINDS)}")
    if not nests_within(raw, MAX_ITEM_DEPTH):
        raise RecordError(
            f"nests deeper than {MAX_ITEM_DEPTH} levels or holds a value JSON cannot keep "
            "(NaN, infinity, a lone surrogate)"
        )
    if kind in _NO_NUL_KINDS and _holds_nul(raw):
        raise RecordError("holds U+0000 (NUL) in a text; the mesh keeps NUL only in message bodies")
    item = dict(raw)
    _CHECKS[kind](item)
    return item


# ---- what every backend does the same way (through the interfaces) --------------------------


def _event_key(event: dict[str, Any]) -> str:
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()


def audit_items(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The log's events as items, each with its `nth` among the events of equal content."""
    seen: Counter[str] = Counter()
    for event in events:
        key = _event_key(event)
        seen[key] += 1
        yield {"kind": "audit", "event": event, "nth": seen[key]}


class AuditRestorer:
    """Restores audit items through `AuditLog`: an event is appended unless the log already
    holds `nth` events of that content. The log is read once, on the first audit item."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._have: Counter[str] | None = None

    def restore(self, item: dict[str, Any]) -> bool:
        if self._have is None:
            self._have = Counter(_event_key(event) for event in self.log.read())
        key = _event_key(item["event"])
        if self._have[key] >= item["nth"]:
            return False
        self.log.append(item["event"])
        self._have[key] += 1
        return True


def message_items(copies: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The `message` items of every stored copy, by message id: each copy given as (where,
    its message in stored form), `where` the recipient's copy's state (MESSAGE_STATES) or
    "sent" (the sender's history copy). An item holds the recipient's copy when there is one."""
    found: dict[str, dict[str, Any]] = {}
    for where, message in copies:
        item = found.setdefault(
            message["id"], {"kind": "message", "message": message, "state": None, "sent": False}
        )
        if where == "sent":
            item["sent"] = True
        else:
            item["message"], item["state"] = message, where
    for msg_id in sorted(found):
        yield found[msg_id]


def lock_items(table: LockTable) -> Iterator[dict[str, Any]]:
    for lock in sorted(table.all(), key=lambda lock: (lock["path"], lock["holder"])):
        yield {"kind": "lock", "record": lock}


def restore_lock(table: LockTable, record: dict[str, Any]) -> bool:
    """Put the lock unless `holder` already holds a lock on that path."""

    def decide(locks: list[dict[str, Any]]) -> LockChanges[bool]:
        if any(
            lock["path"] == record["path"] and lock["holder"] == record["holder"] for lock in locks
        ):
            return LockChanges(False)
        return LockChanges(True, put=[record])

    return table.transact(decide)


def wake_items(book: WakeBook) -> Iterator[dict[str, Any]]:
    for agent in book.agents():
        state = book.load(agent)
        if state is not None:
            yield {"kind": "wake", "agent": agent, "record": state}


def restore_wake(book: WakeBook, agent: str, record: dict[str, Any]) -> bool:
    if book.load(agent) is not None:
        return False
    book.save(agent, record)
    return True
