"""Every exclusion's decision only decides: reaching the storage from inside one is refused,
on every backend, and the exclusion then writes nothing (`drasill_cli.storage.exclusion`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from drasill_cli import clock
from drasill_cli.models import AgentRecord, Task
from drasill_cli.storage import Backend
from drasill_cli.storage.auditlog import event
from drasill_cli.storage.exclusion import InsideExclusion, inside
from drasill_cli.storage.locktable import LockChanges
from tests.storage.test_board import maker


def record(name: str) -> AgentRecord:
    return AgentRecord.from_record({"name": name, "host": "here", "registered_at": clock.iso()})


# What a decision might wrongly do: another interface, or the same one again.
CALLS: dict[str, Callable[[Backend], Any]] = {
    "audit append": lambda b: b.audit_log.append(event("test", None)),
    "presence read": lambda b: b.presence.get("ann"),
    "presence change": lambda b: b.presence.change("bob", lambda _r: None),
    "lock table": lambda b: b.locks.all(),
    "task read": lambda b: b.board.ids(),
    "mail archive": lambda b: b.mailbox.archive("ann"),
    "heartbeat": lambda b: b.presence.last_seen("ann"),
}


def test_a_presence_decision_that_reaches_the_storage_is_refused(backend: Backend) -> None:
    for call in CALLS.values():

        def decide(_current: AgentRecord | None, call: Callable[[Backend], Any] = call) -> Any:
            assert inside() == "Presence.change"
            call(backend)
            return record("ann")

        with pytest.raises(InsideExclusion, match=r"inside the decision of Presence\.change"):
            backend.presence.change("ann", decide)
        assert inside() is None
        assert backend.presence.get("ann") is None, "a refused decision writes nothing"


def test_a_task_decision_or_its_event_that_reaches_the_storage_is_refused(
    backend: Backend,
) -> None:
    task = backend.board.add(maker())
    for call in CALLS.values():

        def decide(t: Task, call: Callable[[Backend], Any] = call) -> Task:
            call(backend)
            return t.replace(attempts=1)

        with pytest.raises(InsideExclusion, match=r"TaskBoard\.change"):
            backend.board.change(task.id, decide)
        stored = backend.board.get(task.id)
        assert stored is not None and stored.attempts == 0

        def describe(_b: Task, a: Task, call: Callable[[Backend], Any] = call) -> dict[str, Any]:
            call(backend)
            return event("test", None, task=a.id)

        with pytest.raises(InsideExclusion, match=r"TaskBoard\.change"):
            backend.board.change(task.id, lambda t: t.replace(attempts=t.attempts), event=describe)
        assert inside() is None


def test_a_lock_decision_that_reaches_the_storage_is_refused(backend: Backend) -> None:
    for call in CALLS.values():

        def decide(_table: Any, call: Callable[[Backend], Any] = call) -> LockChanges[None]:
            call(backend)
            return LockChanges(None)

        with pytest.raises(InsideExclusion, match=r"LockTable\.transact"):
            backend.locks.transact(decide)
        assert inside() is None


def test_a_task_event_is_appended_with_its_change(backend: Backend) -> None:
    task = backend.board.add(maker())
    backend.board.change(
        task.id,
        lambda t: t.replace(attempts=1),
        event=lambda b, a: event("test-change", None, task=a.id, attempts=a.attempts),
    )
    lines = [line for line in backend.audit_log.read() if line["event"] == "test-change"]
    assert [(line["task"], line["attempts"]) for line in lines] == [(task.id, 1)]


def test_a_pure_decision_and_the_calls_after_it_run_as_before(backend: Backend) -> None:
    """The mark ends with the decision: what follows it reaches the storage as usual."""
    stored = backend.presence.change("ann", lambda _r: record("ann"))
    assert stored is not None and inside() is None
    assert backend.presence.get("ann") is not None
