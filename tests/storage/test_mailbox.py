"""The `Mailbox` contract: delivery, taking exactly once, order, history, archive, expiry.

Interface only (see conftest.py): runs unchanged against every backend.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from drasill_cli import clock
from drasill_cli.storage import Backend, auditlog
from tests.storage.mail import deliver, register


def _message(
    to: str, body: str, *, sender: str = "alice", priority: str = "normal"
) -> dict[str, Any]:
    msg_id = clock.new_id("m")
    return {
        "id": msg_id,
        "from": sender,
        "to": to,
        "body": body,
        "priority": priority,
        "created_at": clock.iso(),
        "reply_to": None,
        "thread": msg_id,
        "attachments": [],
        "wake": True,
    }


def _send(backend: Backend, to: str, body: str, **kwargs: str) -> dict[str, Any]:
    message = _message(to, body, **kwargs)
    deliver(backend, message)
    return message


def _bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in messages]


def test_delivered_message_is_taken_once_and_whole(backend: Backend) -> None:
    mailbox = backend.mailbox
    assert not mailbox.has_mailbox("bob")
    assert mailbox.take_next("bob") is None
    sent = _send(backend, "bob", "hello")
    assert mailbox.has_mailbox("bob")
    assert mailbox.has_unread("bob")
    assert mailbox.unread_count("bob") == 1
    assert mailbox.take_next("bob") == sent
    assert mailbox.take_next("bob") is None
    assert not mailbox.has_unread("bob")
    assert mailbox.unread_count("bob") == 0
    assert mailbox.unread_count("nobody") == 0


def test_mail_to_an_unregistered_name_is_refused_and_leaves_nothing(backend: Backend) -> None:
    message = _message("ghost", "anyone there?")
    event = auditlog.event("send", "alice", id=message["id"], to="ghost")
    assert backend.mailbox.deliver(message, event) is False
    assert not backend.mailbox.has_mailbox("ghost")
    assert backend.mailbox.find(message["id"]) is None
    assert backend.mailbox.history("alice", 10) == []
    assert [e for e in backend.audit_log.read() if e.get("id") == message["id"]] == []
    register(backend, "ghost")
    assert backend.mailbox.deliver(message, event) is True
    assert backend.mailbox.take_next("ghost") == message
    assert [e["to"] for e in backend.audit_log.read() if e.get("id") == message["id"]] == ["ghost"]


def test_take_order_is_urgent_first_then_oldest(backend: Backend) -> None:
    for body, priority in [("n1", "normal"), ("u1", "urgent"), ("n2", "normal"), ("u2", "urgent")]:
        _send(backend, "bob", body, priority=priority)
    assert _bodies(list(backend.mailbox.unread("bob"))) == ["u1", "u2", "n1", "n2"]
    taken = [backend.mailbox.take_next("bob") for _ in range(5)]
    assert [m["body"] if m else None for m in taken] == ["u1", "u2", "n1", "n2", None]


def test_last_taken_is_the_message_taken_last_not_the_newest(backend: Backend) -> None:
    assert backend.mailbox.last_taken("bob") is None
    _send(backend, "bob", "n1")
    _send(backend, "bob", "u1", priority="urgent")
    for expected in ("u1", "n1"):  # taken in that order: the newest is taken first
        taken = backend.mailbox.take_next("bob")
        assert taken is not None and taken["body"] == expected
        time.sleep(0.02)  # a file's change time may be a few ms coarse
        last = backend.mailbox.last_taken("bob")
        assert last is not None and last["body"] == expected
    assert backend.mailbox.last_taken("bob") == backend.mailbox.last_taken("bob")  # left as is
    assert backend.mailbox.last_taken("carol") is None


def test_peek_and_unread_leave_mail_unread(backend: Backend) -> None:
    first = _send(backend, "bob", "first")
    _send(backend, "bob", "second")
    assert next(backend.mailbox.unread("bob")) == first
    assert _bodies(list(backend.mailbox.unread("bob"))) == ["first", "second"]
    assert backend.mailbox.unread_count("bob") == 2
    assert backend.mailbox.take_next("bob") == first


def test_racing_takers_get_each_message_exactly_once(backend: Backend) -> None:
    sent = {_send(backend, "bob", f"m{i}")["id"] for i in range(60)}
    taken: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(6)

    def take() -> None:
        start.wait()
        while (message := backend.mailbox.take_next("bob")) is not None:
            with guard:
                taken.append(message["id"])

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(sent), "every message taken, none twice"
    assert backend.mailbox.unread_count("bob") == 0


def test_racing_senders_lose_nothing(backend: Backend) -> None:
    def send(worker: int) -> None:
        for i in range(15):
            _send(backend, "bob", f"{worker}:{i}", sender=f"w{worker}")

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.mailbox.unread_count("bob") == 60
    bodies = _bodies(list(backend.mailbox.unread("bob")))
    assert sorted(bodies) == sorted(f"{w}:{i}" for w in range(4) for i in range(15))


def test_history_is_sent_and_taken_newest_first_with_limit(backend: Backend) -> None:
    to_bob = [_send(backend, "bob", f"a{i}") for i in range(3)]
    from_bob = _send(backend, "alice", "reply", sender="bob")
    assert backend.mailbox.history("bob", 10) == [from_bob], "unread mail is not history yet"
    backend.mailbox.take_next("bob")
    assert backend.mailbox.history("bob", 10) == [from_bob, to_bob[0]]
    assert backend.mailbox.history("alice", 10) == to_bob[::-1]
    assert backend.mailbox.history("alice", 2) == to_bob[:0:-1]
    assert backend.mailbox.history("nobody", 5) == []


def test_find_finds_a_message_wherever_it_is(backend: Backend) -> None:
    unread = _send(backend, "bob", "unread")
    taken = _send(backend, "bob", "taken", priority="urgent")
    archived = _send(backend, "carol", "archived")
    assert backend.mailbox.take_next("bob") == taken
    assert backend.mailbox.archive("carol") == [archived["id"]]
    for message in (unread, taken, archived):
        assert backend.mailbox.find(message["id"]) == message
    assert backend.mailbox.find(clock.new_id("m")) is None


def test_archive_moves_unread_mail_out_of_the_inbox(backend: Backend) -> None:
    old = _send(backend, "carol", "old")
    new = _send(backend, "carol", "new")
    read = _send(backend, "carol", "read first", priority="urgent")
    assert backend.mailbox.take_next("carol") == read
    assert backend.mailbox.archive("carol") == [old["id"], new["id"]]
    assert backend.mailbox.archive("carol") == [], "each message archived once"
    assert backend.mailbox.unread_count("carol") == 0
    assert backend.mailbox.take_next("carol") is None
    assert backend.mailbox.archived("carol", 10) == [new, old]
    assert backend.mailbox.archived("carol", 1) == [new]
    assert backend.mailbox.history("carol", 10) == [read], "archived mail is not history"
    assert backend.mailbox.archived("bob", 10) == []


def test_expiry_takes_sent_and_read_copies_never_unread_or_archived(backend: Backend) -> None:
    read = _send(backend, "bob", "read", priority="urgent")
    unread = _send(backend, "bob", "unread")
    archived = _send(backend, "carol", "archived")
    assert backend.mailbox.take_next("bob") == read
    assert backend.mailbox.archive("carol") == [archived["id"]]
    assert backend.mailbox.expire_history(clock.id_time(read["id"]) or 0.0) == []

    cutoff = time.time() + 1
    planned = backend.mailbox.expire_history(cutoff, apply=False)
    expected = {
        (read["id"], True),
        (read["id"], False),
        (unread["id"], False),
        (archived["id"], False),
    }
    assert {(c.msg_id, c.read) for c in planned} == expected, "sent copies and bob's read one"
    assert backend.mailbox.history("alice", 10) == [archived, unread, read], "a plan deletes none"

    removed = backend.mailbox.expire_history(cutoff)
    assert sorted(removed) == sorted(planned)
    assert backend.mailbox.expire_history(cutoff) == [], "each copy expires once"
    assert backend.mailbox.history("alice", 10) == []
    assert backend.mailbox.history("bob", 10) == []
    assert list(backend.mailbox.unread("bob")) == [unread]
    assert backend.mailbox.archived("carol", 10) == [archived]
    assert backend.mailbox.find(unread["id"]) == unread


def test_attachments_are_stored_by_reference_and_read_with_a_local_path(
    backend: Backend,
) -> None:
    message = _message("bob", "see attached")
    files = [("notes.txt", b"some notes", "a" * 64)]
    message["attachments"] = backend.attachments.put(message["id"], files)
    deliver(backend, message)
    got = backend.mailbox.take_next("bob")
    assert got is not None
    [attachment] = got["attachments"]
    assert attachment == {
        "name": "notes.txt",
        "path": backend.attachments.local_path(message["id"], "notes.txt"),
        "size": 10,
        "sha256": "a" * 64,
    }
    with open(attachment["path"], "rb") as handle:
        assert handle.read() == b"some notes"
    assert backend.mailbox.history("alice", 1)[0]["attachments"] == [attachment]


def test_two_racing_takers_over_200_messages_never_get_the_same_one(backend: Backend) -> None:
    sent = [
        _send(backend, "bob", f"m{i}", priority="urgent" if i % 7 == 0 else "normal")
        for i in range(200)
    ]
    order = [m["id"] for m in sent if m["priority"] == "urgent"]
    order += [m["id"] for m in sent if m["priority"] == "normal"]
    taken: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def take(slot: int) -> None:
        start.wait()
        while (message := backend.mailbox.take_next("bob")) is not None:
            taken[slot].append(message["id"])

    threads = [threading.Thread(target=take, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(taken[0]) & set(taken[1]), "no message went to both takers"
    assert sorted(taken[0] + taken[1]) == sorted(order), "every message taken, none twice"
    for ids in taken:
        assert ids == [i for i in order if i in set(ids)], "each taker got them in take order"
    assert not backend.mailbox.has_unread("bob")
    assert len(backend.mailbox.history("bob", 500)) == 200


def test_owners_are_every_agent_mail_was_delivered_to(backend: Backend) -> None:
    assert backend.mailbox.owners() == []
    _send(backend, "carol", "one")
    _send(backend, "bob", "two")
    _send(backend, "bob", "three")
    assert backend.mailbox.owners() == ["bob", "carol"]
    assert backend.mailbox.has_mailbox("bob") and not backend.mailbox.has_mailbox("dave")
