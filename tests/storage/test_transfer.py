"""The Transfer contract: every stored thing out as items, back in idempotently.

`test_round_trip_*` fill a directory mesh through the interfaces, dump it, restore the items
into a fresh mesh of each backend and dump that back: the same items. The postgres side also
needs the locks, wake book and audit log interfaces of the same branch.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import clock
from drasill_cli.backends import open_backend
from drasill_cli.config import Config
from drasill_cli.location import Location
from drasill_cli.models import AgentRecord, RecordError, Task
from drasill_cli.storage import Backend
from drasill_cli.storage.locktable import LockChanges
from drasill_cli.storage.transfer_items import check_item
from tests.storage.mail import deliver

NOW = clock.iso()


def _agent(name: str) -> AgentRecord:
    return AgentRecord(name=name, host="box-a", registered_at=NOW, cwd="/work")


def _agent_maker(name: str) -> Callable[[AgentRecord | None], AgentRecord]:
    return lambda _current: _agent(name)


def _message(sender: str, to: str, body: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": clock.new_id("m"),
        "from": sender,
        "to": to,
        "body": body,
        "priority": "normal",
        "created_at": clock.iso(),
        "reply_to": None,
        "thread": None,
        "attachments": [],
        **extra,
    }


def _task(task_id: str, title: str) -> Task:
    return Task(
        id=task_id, title=title, state="queued", created_by="alice", created_at=NOW, updated_at=NOW
    )


def fill(mesh: Backend) -> dict[str, Any]:
    """A mesh with something of every kind; what was made, for the assertions."""
    for name in ("alice", "bob"):
        mesh.presence.change(name, _agent_maker(name), beat=True)
    data = b"\x00binary\xffbytes"
    digest = hashlib.sha256(data).hexdigest()
    read = _message("alice", "bob", "read me")
    with_file = _message("alice", "bob", "see attached")
    with_file["attachments"] = mesh.attachments.put(with_file["id"], [("a.bin", data, digest)])
    unread = _message("alice", "bob", "still unread")
    archived = _message("bob", "carol", "archived for carol")
    for message in (read, with_file, unread, archived):
        deliver(mesh, message)
    assert (mesh.mailbox.take_next("bob") or {}).get("id") == read["id"]
    assert mesh.mailbox.archive("carol") == [archived["id"]]
    assert mesh.presence.remove("carol")  # gone since: its archived mail stays
    first = mesh.board.add(lambda task_id: _task(task_id, "first"))
    mesh.board.add(lambda task_id: _task(task_id, "second"))
    mesh.board.change(
        first.id, lambda t: t.replace(state="claimed", claimed_by="bob", claimed_at=NOW)
    )
    lock = {
        "path": "/work/src/x.py",
        "mode": "write",
        "holder": "alice",
        "ttl": 600.0,
        "acquired_at": NOW,
        "expires_at": "2999-01-01T00:00:00Z",
    }
    mesh.locks.transact(lambda _table: LockChanges(None, put=[lock]))
    mesh.budgets.warn("alice", {"ram": 1.5})
    mesh.wake_book.save("bob", {"last_wake": NOW, "attempts": 1})
    for n in range(3):
        mesh.audit_log.append({"time": NOW, "event": "test", "actor": "alice", "n": n})
    mesh.audit_log.append({"time": NOW, "event": "test", "actor": "alice", "n": 0})  # twice
    return {"unread": unread, "with_file": with_file, "read": read, "archived": archived}


def _comparable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items without the meta line's time and the backend they came from."""
    return [item for item in items if item["kind"] != "meta"]


def _restore_all(mesh: Backend, items: list[dict[str, Any]]) -> list[bool]:
    return [mesh.transfer.restore(check_item(item)) for item in items]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Backend]:
    opened = open_backend(Location.directory(tmp_path / "source"), Config())
    try:
        yield opened
    finally:
        opened.close()


def test_round_trip_keeps_everything(source: Backend, backend: Backend) -> None:
    made = fill(source)
    items = list(source.transfer.dump())
    assert items[0]["kind"] == "meta"
    assert all(item == check_item(item) for item in items)  # every item passes its check

    restored = _restore_all(backend, items)
    assert all(restored[1:])  # everything but the meta line was written
    assert _comparable(list(backend.transfer.dump())) == _comparable(items)

    # unread mail is still unread and is taken exactly once; read and archived mail is kept
    assert [m["id"] for m in backend.mailbox.unread("bob")] == [
        made["with_file"]["id"],
        made["unread"]["id"],
    ]
    taken = backend.mailbox.take_next("bob")
    assert taken is not None
    assert Path(taken["attachments"][0]["path"]).read_bytes() == b"\x00binary\xffbytes"
    assert (backend.mailbox.take_next("bob") or {}).get("id") == made["unread"]["id"]
    assert backend.mailbox.take_next("bob") is None
    assert made["read"]["id"] in [m["id"] for m in backend.mailbox.history("bob", 10)]
    assert [m["id"] for m in backend.mailbox.archived("carol", 10)] == [made["archived"]["id"]]
    # tasks keep ids and states; the next task continues the sequence
    tasks = {t.id: t for t in backend.board.all()}
    assert tasks["t-0001"].state == "claimed"
    assert tasks["t-0001"].claimed_by == "bob"
    assert backend.board.queued() == ["t-0002"]
    assert backend.board.add(lambda task_id: _task(task_id, "third")).id == "t-0003"
    # agents with their heartbeat, locks, budgets, wake state, audit in order
    assert backend.presence.names() == ["alice", "bob"]
    seen = backend.presence.last_seen("alice")
    assert seen == pytest.approx(source.presence.last_seen("alice"), abs=1e-3)
    assert [lock["path"] for lock in backend.locks.all()] == ["/work/src/x.py"]
    assert backend.budgets.warned("alice") == {"ram": 1.5}
    assert backend.wake_book.load("bob") == {"last_wake": NOW, "attempts": 1}
    assert [e.get("n") for e in backend.audit_log.read() if e["event"] == "test"] == [0, 1, 2, 0]


def test_a_second_restore_changes_nothing(source: Backend, backend: Backend) -> None:
    fill(source)
    items = list(source.transfer.dump())
    _restore_all(backend, items)
    first = list(backend.transfer.dump())
    assert not any(_restore_all(backend, items))  # every item reported already present
    assert _comparable(list(backend.transfer.dump())) == _comparable(first)
    assert backend.mailbox.unread_count("bob") == 2  # never delivered twice


def test_the_sequence_never_goes_backwards(backend: Backend) -> None:
    for _ in range(3):
        backend.board.add(lambda task_id: _task(task_id, "x"))
    assert not backend.transfer.restore(check_item({"kind": "task-sequence", "last": 1}))
    assert backend.transfer.restore(check_item({"kind": "task-sequence", "last": 9}))
    assert backend.board.add(lambda task_id: _task(task_id, "y")).id == "t-0010"


def test_a_restored_task_moves_the_numbering_past_it(backend: Backend) -> None:
    item = {"kind": "task", "record": _task("t-0041", "imported").to_record()}
    assert backend.transfer.restore(check_item(item))
    assert not backend.transfer.restore(check_item(item))
    assert backend.board.add(lambda task_id: _task(task_id, "new")).id == "t-0042"


def test_a_message_copy_already_taken_is_not_delivered_again(backend: Backend) -> None:
    message = _message("alice", "bob", "hi")
    deliver(backend, message)
    assert backend.mailbox.take_next("bob") is not None
    item = {"kind": "message", "message": message, "state": "unread", "sent": True}
    assert not backend.transfer.restore(check_item(item))
    assert backend.mailbox.take_next("bob") is None


def test_equal_audit_events_are_kept_as_many_times_as_they_were_logged(backend: Backend) -> None:
    event = {"time": NOW, "event": "same", "actor": None}
    backend.audit_log.append(event)
    assert not backend.transfer.restore(check_item({"kind": "audit", "event": event, "nth": 1}))
    assert backend.transfer.restore(check_item({"kind": "audit", "event": event, "nth": 2}))
    assert [e["event"] for e in backend.audit_log.read()].count("same") == 2


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ([1, 2], "not a JSON object"),
        ({"kind": "gizmo"}, "unknown kind 'gizmo'"),
        ({"kind": "meta", "format": 99}, "format 99"),
        ({"kind": "agent", "record": {"name": "Bad Name!"}, "last_seen": None}, "name"),
        ({"kind": "task", "record": {"id": "t-0001", "title": "x"}}, "lacks"),
        ({"kind": "task-sequence", "last": -1}, "not a task number"),
        ({"kind": "message", "message": {"id": "nope"}, "state": "unread", "sent": False}, "id"),
        ({"kind": "wake", "agent": "bob"}, "lacks `record`"),
        ({"kind": "audit", "event": {"time": NOW, "event": "x"}, "nth": 0}, "nth"),
        (
            {
                "kind": "attachment",
                "message_id": clock.new_id("m"),
                "name": "a",
                "size": 2,
                "sha256": "0" * 64,
                "content": base64.b64encode(b"ab").decode(),
            },
            "sha256",
        ),
    ],
)
def test_check_item_names_what_is_wrong(item: Any, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        check_item(item)
