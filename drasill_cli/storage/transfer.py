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
`storage.transfer_items.check_item` (strict pydantic models of the items, their records built
from the same `models` rules every stored record passes, and the bounds every backend
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
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from drasill_cli import clock
from drasill_cli.models import (
    RecordError,
)
from drasill_cli.storage.locktable import LockChanges

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


class Transfer(Protocol):
    def dump(self) -> Iterator[dict[str, Any]]:
        """Every stored thing, one JSON-able item each, in the order of `KINDS`; a `meta`
        item first. A damaged entry is skipped and said in the backend's warnings."""
        ...

    def restore(self, item: dict[str, Any]) -> bool:
        """Store one item that passed `transfer_items.check_item`; False when it was there
        already (nothing written). Each item is its own operation (one transaction on a
        database)."""
        ...


# ---- checking one item ----------------------------------------------------------------------


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
