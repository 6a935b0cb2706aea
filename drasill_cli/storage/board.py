"""`TaskBoard`: the task records, numbered ids, one task changed at a time, the claim queue and
who holds what.

A task crosses the boundary as a `models.Task` (read ones have passed `Task.from_record`; a
stored record that fails it, or that holds another task's id, is quarantined and never returned).
The feature module `tasks.py` owns the rules (the state machine, dependencies, claims, review,
the audit lines); the board owns how tasks are kept and excluded:

- `change`: one task read, decided and written under that task's exclusion (a timeout of 0
  does not wait for it);
- `add`: numbering and storing in one step (racing adders never share a number);
- `claim_next`: the first claimable task taken in one step, exactly once among any number of
  racing claimers;
- `queued`, `held_by` and `holders`: hints read without exclusion.
How tasks are kept and excluded is the backend's (see its own module).

Ids are short and sort in creation order: `t-0001`, `t-0002`, ... Past `t-9999` a letter for
the number of digits keeps the order: `t-a10000`, `t-b100000`. Every backend numbers with
`format_id`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from drasill_cli.errors import NegativeOutcome

if TYPE_CHECKING:
    from drasill_cli.models import Task

ID_DIGITS = 4
# The highest task number the mesh hands out or takes in (an import): far beyond any real
# board, and well inside a PostgreSQL bigint and the id letters `format_id` has (a to z).
MAX_TASK_NUMBER = 10**12 - 1
# Priorities lie in [-PRIORITY_LIMIT, PRIORITY_LIMIT] (a backend may rely on the bound to order).
PRIORITY_LIMIT = 1_000_000
# How long a change waits for another process's change of the same task (a hung holder
# becomes a clear `TaskBusy`, not a hang).
CHANGE_TIMEOUT_S = 30.0
# The states in which a task belongs to its claimant (`held_by`).
HELD_STATES = frozenset({"claimed", "working"})

Decide = Callable[["Task"], "Task | None"]
# The audit event of a change (`auditlog.event`), made from the task before and after it.
Describe = Callable[["Task", "Task"], dict[str, Any]]


class Claim(NamedTuple):
    """What `TaskBoard.claim_next` did: the task it claimed (None: none was claimable), and
    how many queued tasks it passed over because a dependency is not completed."""

    task: Task | None
    waiting: int


class TaskBusy(NegativeOutcome):
    """Another process is changing the task (a racing claimer, or one that hangs)."""

    default_code = "task-busy"


def format_id(number: int) -> str:
    """`t-0007` for 7: four digits, then a letter for each longer width (`t-a10000`), so that
    ids sort as strings in creation order."""
    digits = str(number)
    if len(digits) <= ID_DIGITS:
        return f"t-{number:0{ID_DIGITS}d}"
    return f"t-{chr(ord('a') + len(digits) - ID_DIGITS - 1)}{digits}"


def id_number(task_id: str) -> int | None:
    """The number of an id made by `format_id`; None for any other id."""
    body = task_id.removeprefix("t-")
    if body[:1].isalpha():
        body = body[1:]
    if not body.isdigit() or not task_id.startswith("t-"):
        return None
    number = int(body)
    return number if format_id(number) == task_id else None


def holder(task: Task | None) -> str | None:
    """The agent a claimed or working task belongs to (None in every other state)."""
    if task is None or task.state not in HELD_STATES:
        return None
    return task.claimed_by


def busy(task_id: str, timeout: float) -> TaskBusy:
    """The error of a change that found the task busy for `timeout` seconds."""
    if timeout <= 0:
        return TaskBusy(f"task {task_id} is busy: another mesh process is changing it; try again")
    return TaskBusy(
        f"task {task_id} is busy: another mesh process held it for {timeout:g}s; try again"
    )


class TaskBoard(Protocol):
    def get(self, task_id: str) -> Task | None:
        """The task, or None (also for an id no task could have)."""
        ...

    def exists(self, task_id: str) -> bool:
        """Whether a record is stored under `task_id` (cheaper than `get`: not read)."""
        ...

    def ids(self) -> list[str]:
        """The id of every stored task, sorted as strings."""
        ...

    def all(self) -> list[Task]:
        """Every task (in `ids` order)."""
        ...

    def add(self, make: Callable[[str], Task]) -> Task:
        """Store `make(id)` under the next free numbered id (`format_id`, one above every id
        ever handed out, even if that task is gone), in one step: racing adders get distinct
        ids, numbered in the order they were stored, and a task is claimable (`queued`) no
        earlier than it can be read. `make` must return a task with the id it was given."""
        ...

    def change(
        self,
        task_id: str,
        decide: Decide,
        *,
        timeout: float = CHANGE_TIMEOUT_S,
        event: Describe | None = None,
    ) -> tuple[Task, Task] | None:
        """Read, decide and write one task, excluding every other change of it.

        `decide(before)` returns the task to store, None to leave it as it is, or raises (a
        `MeshError`; nothing is written). `event(before, after)` makes the change's audit
        event, which the backend appends with the write, under the same exclusion (so each
        task's events are logged in the order they happened; a failing append is a warning,
        as `auditlog.append_or_warn`). Both callbacks only decide: neither may reach the
        storage (`storage.exclusion`). Returns
        `(before, after)`, or None when there is no such task or `decide` returned None.
        `TaskBusy` when another change held the task for `timeout` seconds (0: do not wait).
        """
        ...

    def queued(self) -> list[str]:
        """Ids of the queued tasks in claim order: highest priority first, then oldest (by id).
        A hint read without exclusion: `change` says what the task is now."""
        ...

    def held_by(self, agent: str) -> list[str]:
        """Ids of the claimed and working tasks whose claimant is `agent` (a hint, as `queued`)."""
        ...

    def holders(self) -> list[str]:
        """The names that may hold a claimed or working task, sorted: every claimant of one is
        listed, without reading the tasks (a hint, as `held_by`: a name listed may hold nothing
        by now)."""
        ...

    def claim_next(self, actor: str, at: str, event: dict[str, Any]) -> Claim:
        """Claim the first claimable task for `actor`, in one step.

        Claimable: `queued`, with every task of its `depends_on` stored and `completed` (a
        dependency that is missing waits). Order: as `queued` (highest priority, then oldest).
        The task becomes `claimed`, `claimed_by` `actor`, `claimed_at` and `updated_at` `at`;
        `event` (an audit event, with `task` set to the claimed task's id) is appended to the
        audit log with it, and a TASKS change is announced after the claim is stored.

        Of any number of racing claimers, on any host, each task goes to exactly one; a task
        another process is changing is passed over, and waited for (up to `CHANGE_TIMEOUT_S`,
        then `TaskBusy`) only when nothing else is claimable. No other storage operation runs
        inside the task's exclusion. `Claim(None, waiting)` when nothing is claimable.
        """
        ...
