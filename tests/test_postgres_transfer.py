"""The PostgreSQL Transfer's own statements (agents, attachments, mail, tasks, the sequence,
budgets), restored twice and dumped back, on the throwaway cluster. Locks, wake state and the
audit log go through their interfaces (tests/storage/test_transfer.py covers the whole)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from drasill_cli import clock
from drasill_cli.backends import open_backend
from drasill_cli.config import Config
from drasill_cli.location import Location
from drasill_cli.storage.transfer import attachment_item
from drasill_cli.storage.transfer_items import check_item

NOW = clock.iso()


@pytest.fixture
def pg(pg_mesh_url: str) -> Iterator[Any]:
    opened = open_backend(Location.of_url(pg_mesh_url), Config())
    try:
        yield opened
    finally:
        opened.close()


def _own_items(pg: Any) -> list[dict[str, Any]]:
    """The dump up to the task sequence: the part written by the transfer's own SQL."""
    found = []
    for item in pg.transfer.dump():
        found.append(item)
        if item["kind"] == "task-sequence":
            return found
    return found


def _items() -> list[dict[str, Any]]:
    msg_id = clock.new_id("m")
    data = b"\x00bytes"
    message = {
        "id": msg_id,
        "from": "alice",
        "to": "bob",
        "body": "hi",
        "priority": "urgent",
        "created_at": NOW,
        "reply_to": None,
        "thread": None,
        "attachments": [
            {"name": "a", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ],
    }
    agent = {"name": "alice", "host": "box-a", "registered_at": NOW}
    task = {"id": "t-0007", "title": "x", "state": "queued", "created_at": NOW, "updated_at": NOW}
    return [
        {"kind": "meta", "format": 1, "source": "directory"},
        {"kind": "agent", "record": agent, "last_seen": 1_700_000_000.5},
        attachment_item(msg_id, "a", data),
        {"kind": "message", "message": message, "state": "unread", "sent": True},
        {"kind": "task", "record": task},
        {"kind": "task-sequence", "last": 12},
        {"kind": "budget-warning", "agent": "alice", "record": {"over": {"ram": 2.0}, "at": NOW}},
    ]


def test_restore_then_dump_gives_the_rows_back_once(pg: Any) -> None:
    items = [check_item(item) for item in _items()]
    assert [pg.transfer.restore(item) for item in items] == [False] + [True] * 5 + [True]
    assert not any(pg.transfer.restore(item) for item in items)  # a second import: nothing
    dumped = _own_items(pg)
    by_kind = {item["kind"]: item for item in dumped}
    assert by_kind["agent"]["last_seen"] == pytest.approx(1_700_000_000.5)
    assert by_kind["agent"]["record"]["name"] == "alice"
    assert by_kind["attachment"] == items[2]
    assert by_kind["message"]["state"] == "unread"
    assert by_kind["message"]["sent"] is True
    assert by_kind["message"]["message"]["id"] == items[3]["message"]["id"]
    assert by_kind["task"]["record"]["id"] == "t-0007"
    assert by_kind["task-sequence"] == {"kind": "task-sequence", "last": 12}
    assert [i["kind"] for i in dumped].count("message") == 1
    # the sequence never goes backwards
    assert not pg.transfer.restore(check_item({"kind": "task-sequence", "last": 3}))
    with pg.transaction() as cur:
        cur.execute("SELECT state, record FROM mesh_budgets")
        assert cur.fetchall() == [("warned", {"over": {"ram": 2.0}, "at": NOW})]
        cur.execute("SELECT nextval('mesh_task_numbers')")
        assert cur.fetchone() == (13,)
