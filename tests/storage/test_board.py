"""`TaskBoard` contract: numbered adds, exclusive changes, the claim queue, held-by, busy tasks."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from drasill_cli import clock
from drasill_cli.backends import open_backend
from drasill_cli.config import Config
from drasill_cli.errors import NegativeOutcome
from drasill_cli.location import Location
from drasill_cli.models import Task
from drasill_cli.storage import Backend
from drasill_cli.storage.auditlog import event
from drasill_cli.storage.board import TaskBoard, TaskBusy, format_id
from tests.harness import Harness

RACERS = 12
PROCESS_RACERS = 6
PROCESS_TASKS = 50


def maker(title: str = "a task", priority: int = 0) -> Callable[[str], Task]:
    def make(task_id: str) -> Task:
        now = clock.iso()
        return Task(
            id=task_id,
            title=title,
            state="queued",
            priority=priority,
            created_at=now,
            updated_at=now,
        )

    return make


def claimed_by(agent: str) -> Callable[[Task], Task | None]:
    """A claim's decision: the task for `agent` if it is still queued, else nothing."""

    def decide(task: Task) -> Task | None:
        if task.state != "queued":
            return None
        return task.replace(state="claimed", claimed_by=agent, claimed_at=clock.iso())

    return decide


def requeued(task: Task) -> Task:
    return task.replace(state="queued", claimed_by=None, claimed_at=None)


def race(count: int, run: Callable[[int], object]) -> list[object]:
    """`run(i)` for each i in its own thread, all released at once; their results in i order."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def racer(i: int) -> None:
        barrier.wait()
        try:
            results[i] = run(i)
        except Exception as exc:  # the test looks at what each racer met
            results[i] = exc

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def board(backend: Backend) -> TaskBoard:
    return backend.board


def test_add_numbers_ids_in_order_and_stores_the_task(board: TaskBoard) -> None:
    first = board.add(maker("first", priority=3))
    second = board.add(maker("second"))
    assert (first.id, second.id) == (format_id(1), format_id(2)) == ("t-0001", "t-0002")
    got = board.get(first.id)
    assert got is not None
    assert (got.id, got.title, got.state, got.priority) == (first.id, "first", "queued", 3)
    assert board.exists(first.id) and not board.exists("t-0003")
    assert board.ids() == [first.id, second.id]
    assert [t.title for t in board.all()] == ["first", "second"]


def test_unknown_or_impossible_ids_are_none(board: TaskBoard) -> None:
    for task_id in ("t-0001", "../etc", "", "a/b"):
        assert board.get(task_id) is None
        assert not board.exists(task_id)
        assert board.change(task_id, claimed_by("ann")) is None
    assert board.ids() == [] and board.all() == [] and board.queued() == []


def test_racing_adders_get_distinct_ids_numbered_in_store_order(board: TaskBoard) -> None:
    results = race(RACERS, lambda i: board.add(maker(f"racer {i}")))
    added = [r for r in results if isinstance(r, Task)]
    assert len(added) == RACERS, results
    assert sorted(t.id for t in added) == [format_id(n) for n in range(1, RACERS + 1)]
    # Numbered in the order they were stored: creation times follow the ids.
    stored = [board.get(format_id(n)) for n in range(1, RACERS + 1)]
    times = [t.created_at for t in stored if t is not None]
    assert len(times) == RACERS and times == sorted(times)
    assert board.add(maker()).id == format_id(RACERS + 1)


def test_a_new_task_never_reuses_a_handed_out_number(board: TaskBoard) -> None:
    board.add(maker())
    second = board.add(maker())
    board.change(second.id, lambda t: t.replace(state="completed"))
    assert board.add(maker()).id == format_id(3)


def test_change_returns_before_and_after_and_writes_whole(board: TaskBoard) -> None:
    task = board.add(maker())
    seen: list[tuple[str, str]] = []

    def describe(b: Task, a: Task) -> dict[str, Any]:
        seen.append((b.state, a.state))
        return event("test-change", None, task=a.id)

    changed = board.change(task.id, claimed_by("ann"), event=describe)
    assert changed is not None
    before, after = changed
    assert (before.state, after.state, after.claimed_by) == ("queued", "claimed", "ann")
    assert seen == [("queued", "claimed")]
    stored = board.get(task.id)
    assert stored is not None and (stored.state, stored.claimed_by) == ("claimed", "ann")


def test_a_decision_that_declines_or_raises_writes_nothing(board: TaskBoard) -> None:
    task = board.add(maker())
    hooked: list[Task] = []

    def describe(_b: Task, a: Task) -> dict[str, Any]:
        hooked.append(a)
        return event("test-change", None)

    assert board.change(task.id, lambda t: None, event=describe) is None

    def refuse(_task: Task) -> Task:
        raise NegativeOutcome("no", code="refused")

    with pytest.raises(NegativeOutcome):
        board.change(task.id, refuse, event=describe)
    assert hooked == []
    stored = board.get(task.id)
    assert stored is not None and stored.state == "queued"
    assert board.queued() == [task.id]


def test_racing_changers_exactly_one_wins(board: TaskBoard) -> None:
    for _round in range(3):
        task_id = board.add(maker()).id

        def claim(i: int, task_id: str = task_id) -> object:
            return board.change(task_id, claimed_by(f"a{i}"))

        results = race(RACERS, claim)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        won = winners[0]
        assert isinstance(won, tuple)
        stored = board.get(task_id)
        assert stored is not None and stored.claimed_by == won[1].claimed_by


def test_racing_counters_lose_no_update(board: TaskBoard) -> None:
    """Each change sees the one before it: read-decide-write is one step."""
    task = board.add(maker())
    results = race(
        RACERS, lambda i: board.change(task.id, lambda t: t.replace(attempts=t.attempts + 1))
    )
    assert all(isinstance(r, tuple) for r in results), results
    stored = board.get(task.id)
    assert stored is not None and stored.attempts == RACERS


def test_queued_is_in_claim_order_priority_then_age(board: TaskBoard) -> None:
    low = board.add(maker("low", priority=-5))
    old = board.add(maker("old"))
    high = board.add(maker("high", priority=9))
    new = board.add(maker("new"))
    top = board.add(maker("top", priority=1_000_000))
    bottom = board.add(maker("bottom", priority=-1_000_000))
    assert board.queued() == [top.id, high.id, old.id, new.id, low.id, bottom.id]
    board.change(high.id, claimed_by("ann"))
    assert board.queued() == [top.id, old.id, new.id, low.id, bottom.id]
    board.change(high.id, requeued)
    assert board.queued() == [top.id, high.id, old.id, new.id, low.id, bottom.id]


def test_held_by_follows_claims_and_releases(board: TaskBoard) -> None:
    one, two, three = (board.add(maker(n)) for n in ("one", "two", "three"))
    board.change(one.id, claimed_by("ann"))
    board.change(two.id, claimed_by("ann"))
    board.change(three.id, claimed_by("bob"))
    assert board.held_by("ann") == [one.id, two.id]
    assert board.held_by("bob") == [three.id]
    assert board.held_by("cy") == []
    board.change(two.id, lambda t: t.replace(state="working"))
    assert board.held_by("ann") == [one.id, two.id]  # working is held too
    board.change(one.id, lambda t: t.replace(state="completed"))  # done: no longer held
    board.change(two.id, lambda t: t.replace(claimed_by="bob"))  # handed over
    assert board.held_by("ann") == []
    assert board.held_by("bob") == [two.id, three.id]
    board.change(three.id, requeued)
    assert board.held_by("bob") == [two.id]
    assert board.queued() == [three.id]


def test_holders_lists_every_claimant(board: TaskBoard) -> None:
    one, two, three = (board.add(maker(n)) for n in ("one", "two", "three"))
    assert board.holders() == []
    board.change(one.id, claimed_by("bob"))
    board.change(two.id, claimed_by("ann"))
    board.change(three.id, claimed_by("ann"))
    board.change(three.id, lambda t: t.replace(state="working"))
    assert board.holders() == ["ann", "bob"]
    board.change(one.id, requeued)
    board.change(two.id, lambda t: t.replace(state="completed"))
    assert "ann" in board.holders(), "working is held too"
    assert all(board.held_by(name) == [] for name in board.holders() if name != "ann")


@contextmanager
def _being_changed(board: TaskBoard, task_id: str, state: str) -> Iterator[None]:
    """A change of `task_id` in progress in another thread for the whole block; it writes
    `state` once the block ends."""
    inside, leave = threading.Event(), threading.Event()

    def slow(t: Task) -> Task:
        inside.set()
        leave.wait(30)
        return t.replace(state=state)

    holder = threading.Thread(target=board.change, args=(task_id, slow))
    holder.start()
    try:
        assert inside.wait(30)
        yield
    finally:
        leave.set()
        holder.join(30)


def test_a_busy_task_with_timeout_0_is_task_busy_at_once(board: TaskBoard) -> None:
    task = board.add(maker())
    with _being_changed(board, task.id, "working"):
        started = time.monotonic()
        with pytest.raises(TaskBusy) as busy:
            board.change(task.id, claimed_by("ann"), timeout=0)
        assert time.monotonic() - started < 5
        assert busy.value.code == "task-busy" and busy.value.exit_code == 1
        assert task.id in busy.value.message
        with pytest.raises(TaskBusy):
            board.change(task.id, claimed_by("ann"), timeout=0.2)
        # Another task is not held up by it.
        other = board.add(maker())
        assert board.change(other.id, claimed_by("ann"), timeout=0) is not None
    stored = board.get(task.id)
    assert stored is not None and stored.state == "working"
    assert board.change(task.id, lambda t: t.replace(state="failed"), timeout=0) is not None


def test_the_event_is_made_inside_the_exclusion_from_the_write(board: TaskBoard) -> None:
    """`event` (the audit line) gets the task as written, and no racer changes it meanwhile."""
    task = board.add(maker())
    seen: list[object] = []

    def racer() -> None:
        try:
            seen.append(board.change(task.id, claimed_by("bob"), timeout=0))
        except TaskBusy as exc:
            seen.append(exc.code)

    def describe(_before: Task, after: Task) -> dict[str, Any]:
        seen.append(after.claimed_by)
        thread = threading.Thread(target=racer)  # its own context: not inside this decision
        thread.start()
        thread.join(30)
        return event("test-change", None, task=after.id)

    assert board.change(task.id, claimed_by("ann"), event=describe) is not None
    assert seen == ["ann", "task-busy"]
    stored = board.get(task.id)
    assert stored is not None and stored.claimed_by == "ann"


def test_a_look_at_tasks_being_changed_is_never_held_up(board: TaskBoard) -> None:
    """A claim looks up its dependencies with `get` before its own change (a decision never
    reads the storage): never held up by their own changes."""
    dependency = board.add(maker("dependency"))
    task = board.add(maker("task"))
    with _being_changed(board, dependency.id, "completed"):
        started = time.monotonic()
        found = board.get(dependency.id)
        states = [found.state if found is not None else "missing"]
        assert board.change(task.id, lambda t: t.replace(attempts=1), timeout=0) is not None
        assert time.monotonic() - started < 5
        assert states == ["queued"]  # the change in progress is not seen before it is done
    found = board.get(dependency.id)
    assert found is not None and found.state == "completed"


def _claim_all(location: Location, agent: str, wait: float, start: Any, out: Any) -> None:
    """A claimer process: claim queued tasks until none are left; send the ids it won."""
    opened = open_backend(location, Config())
    won: list[str] = []
    try:
        start.wait(60)
        while queue := opened.board.queued():
            for task_id in queue:
                try:
                    changed = opened.board.change(task_id, claimed_by(agent), timeout=wait)
                except TaskBusy:
                    continue
                if changed is not None:
                    won.append(task_id)
    finally:
        out.put((agent, won))
        opened.close()


def test_racing_processes_claim_each_task_exactly_once(backend: Backend, harness: Harness) -> None:
    # The mesh the `backend` fixture opened, opened again by each process.
    location = harness.location
    board = backend.board
    ids = [board.add(maker(f"task {n}", priority=n % 3)).id for n in range(PROCESS_TASKS)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESS_RACERS)
    out = context.Queue()
    # Half never wait for a busy task (they move on), half wait for it.
    racers = [
        context.Process(
            target=_claim_all, args=(location, f"p{i}", 0 if i % 2 else 5.0, start, out)
        )
        for i in range(PROCESS_RACERS)
    ]
    for racer in racers:
        racer.start()
    results = dict(out.get(timeout=120) for _ in racers)
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0
    won = [task_id for ids_won in results.values() for task_id in ids_won]
    assert sorted(won) == ids, "each task won exactly once"
    for agent, ids_won in results.items():
        for task_id in ids_won:
            stored = board.get(task_id)
            assert stored is not None and (stored.state, stored.claimed_by) == ("claimed", agent)
    assert board.queued() == []


def test_a_damaged_record_is_quarantined_never_returned_its_number_never_reused(
    backend: Backend, harness: Harness
) -> None:
    board = backend.board
    damaged, foreign, sound = (board.add(maker(n)) for n in ("damaged", "foreign", "sound"))
    # What no interface may do (store a damaged record in a task's place): the harness does.
    harness.plant_task_record(backend, damaged.id, {**damaged.to_record(), "state": "bogus"})
    harness.plant_task_record(backend, foreign.id, sound.to_record())  # another task's id
    view = backend.read_only_view().board
    assert view.get(damaged.id) is None, "a read-only view never returns it either"
    assert backend.board.get(damaged.id) is None
    assert [t.id for t in board.all()] == [sound.id]
    assert board.ids() == [sound.id]
    assert sum("quarantined" in warning for warning in backend.warnings) == 2
    # The queue is a hint: a claimer meeting them there finds nothing, and they leave it.
    for task_id in board.queued():
        if task_id != sound.id:
            assert board.change(task_id, claimed_by("ann")) is None
    assert board.queued() == [sound.id]
    assert board.add(maker()).id == format_id(4)
