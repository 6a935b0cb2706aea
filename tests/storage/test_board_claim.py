"""The contract of `TaskBoard.claim_next`, on every backend: claim order, dependencies, the
count of waiting tasks, the audit event, busy tasks, and racing claimers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drasill_cli import clock
from drasill_cli.storage import Backend
from drasill_cli.storage.auditlog import event
from drasill_cli.storage.board import Claim, TaskBoard
from tests.storage.test_board import claimed_by, maker, race

RACERS = 8


@contextmanager
def _being_changed(board: TaskBoard, task_id: str) -> Iterator[threading.Event]:
    """A change of `task_id` (leaving it as it is) in progress in another thread until the
    block ends or the event it gives is set."""
    inside, leave = threading.Event(), threading.Event()

    def slow(task: Any) -> Any:
        inside.set()
        leave.wait(30)
        return task

    holder = threading.Thread(target=board.change, args=(task_id, slow))
    holder.start()
    try:
        assert inside.wait(30)
        yield leave
    finally:
        leave.set()
        holder.join(30)


def _claim(backend: Backend, agent: str = "ann") -> Claim:
    return backend.board.claim_next(
        agent, clock.iso(), event("task-claim", agent, state="claimed", from_state="queued")
    )


def _claimed_id(backend: Backend, agent: str) -> str | None:
    claim = _claim(backend, agent)
    return None if claim.task is None else claim.task.id


def test_claims_in_claim_order_and_logs_the_event(backend: Backend) -> None:
    board = backend.board
    low, old, high, new = (
        board.add(maker(title, priority)).id
        for title, priority in (("low", -1), ("old", 0), ("high", 5), ("new", 0))
    )
    at = clock.iso()
    claim = board.claim_next("ann", at, event("task-claim", "ann", state="claimed", next=True))
    assert claim.task is not None
    assert claim.task.id == high
    assert (claim.task.state, claim.task.claimed_by) == ("claimed", "ann")
    assert claim.task.claimed_at == at
    assert claim.task.updated_at == at
    stored = board.get(high)
    assert stored is not None
    assert stored.to_record() == claim.task.to_record()
    assert board.queued() == [old, new, low]
    assert board.held_by("ann") == [high]
    logged = backend.audit_log.latest(1)[0]
    assert (logged["event"], logged["actor"], logged["task"]) == ("task-claim", "ann", high)
    assert (logged["state"], logged["next"]) == ("claimed", True)
    assert [_claimed_id(backend, "bob") for _ in range(3)] == [old, new, low]
    assert _claim(backend) == Claim(None, 0)


def test_a_task_waits_until_every_dependency_is_completed(backend: Backend) -> None:
    board = backend.board
    first = board.add(maker("first")).id
    second = board.add(maker("second")).id

    def depending(on: list[str], priority: int) -> str:
        make = maker("depends", priority)
        return board.add(lambda task_id: make(task_id).replace(depends_on=on)).id

    on_both = depending([first, second], 9)
    on_missing = depending(["t-9999"], 8)
    claim = _claim(backend)  # the two waiting ones come first in order, and are passed over
    assert claim.task is not None
    assert claim.task.id == first
    assert claim.waiting == 2
    board.change(first, lambda t: t.replace(state="completed"))
    claim = _claim(backend)
    assert claim.task is not None
    assert claim.task.id == second  # on_both still waits for second
    assert _claim(backend) == Claim(None, 2)
    board.change(second, lambda t: t.replace(state="completed"))
    claim = _claim(backend)
    assert claim.task is not None
    assert claim.task.id == on_both
    assert _claim(backend) == Claim(None, 1)
    assert board.queued() == [on_missing]


def test_a_busy_task_is_passed_over_then_waited_for(backend: Backend) -> None:
    board = backend.board
    busy = board.add(maker("busy", 5)).id
    free = board.add(maker("free")).id
    with _being_changed(board, busy):
        claim = _claim(backend)
        assert claim.task is not None
        assert claim.task.id == free  # at once, not after the busy one's change
    with _being_changed(board, busy) as leave:
        threading.Timer(0.5, leave.set).start()  # the change ends while the claim waits
        started = time.monotonic()
        claim = _claim(backend)
    assert claim.task is not None
    assert claim.task.id == busy  # nothing else: waited for, then claimed
    assert 0.4 <= time.monotonic() - started < 10


def test_racing_claimers_each_get_a_different_task(backend: Backend) -> None:
    board = backend.board
    added = {board.add(maker(f"task {n}", n % 3)).id for n in range(RACERS * 2)}
    board.change(sorted(added)[0], claimed_by("someone"))  # not claimable any more
    results = race(RACERS, lambda i: [_claim(backend, f"w{i}") for _ in range(3)])
    claims: list[Claim] = []
    for result in results:
        assert isinstance(result, list), result  # a racer's claims, not an error
        claims.extend(result)
    won = [claim.task.id for claim in claims if claim.task is not None]
    assert sorted(won) == sorted(added - {sorted(added)[0]})
    assert len(claims) - len(won) == RACERS * 3 - (len(added) - 1)
