"""`TaskBoard` for a PostgreSQL mesh: a row per task in `mesh_tasks`, row locks, a sequence.

Each task is one row: its record (`models.Task` as JSON) and beside it the columns the database
orders and finds by (`number`, `state`, `priority`, `claimed_by`), written from the record in the
same statement, so they never disagree with it.

- `change` is one transaction: `SELECT ... FOR UPDATE` of the row (`NOWAIT` for a timeout of 0,
  else a transaction-local `lock_timeout`: a lock not had in time is `TaskBusy`), the decision,
  the `UPDATE`, the change's audit row (`event`, inserted on this thread's connection: inside
  the transaction, so it waits on nothing the change holds), and the TASKS notification at
  commit. Of any number of racing changers, on any host, each sees the one before it.
- `add` takes the `tasks` guard row, numbers from the sequence `mesh_task_numbers` (never below
  a stored number, never reused, even for a task later quarantined), inserts and notifies in one
  transaction: racing adders are numbered in the order they are stored, and a task is queued
  no earlier than it can be read.
- `queued` and `held_by` are index scans of the columns (hints: `change` says what a task is).

A row whose record fails `Task.from_record`, or that holds another task's id, is moved to
`mesh_quarantine` (one line in the backend's warnings) and never returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.ops import begin, finish, forget, new_op, retried
from drasill_cli.models import RecordError, Task
from drasill_cli.storage.auditlog import append_or_warn
from drasill_cli.storage.board import (
    CHANGE_TIMEOUT_S,
    HELD_STATES,
    Decide,
    Describe,
    busy,
    format_id,
)
from drasill_cli.storage.changes import TASKS, Change
from drasill_cli.storage.exclusion import deciding, deciding2

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

QUARANTINE_KIND = "tasks"
_HELD = sorted(HELD_STATES)


def _checked(task_id: str, raw: Any) -> Task:
    task = Task.from_record(raw)
    if task.id != task_id:
        raise RecordError(f"holds task {task.id!r}, not {task_id!r}")
    return task


def _row(task: Task) -> tuple[Any, ...]:
    """The column values stored for `task`: state, priority, claimant, record."""
    from psycopg.types.json import Jsonb

    return (task.state, task.priority, task.claimed_by, Jsonb(task.to_record()))


class PostgresBoard:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    # ---- reading ---------------------------------------------------------------------------

    def _valid(self, cur: psycopg.Cursor[Any], task_id: str, raw: Any) -> Task | None:
        """The task the row of `task_id` holds, or None after quarantining an unusable one."""
        try:
            return _checked(task_id, raw)
        except RecordError as exc:
            self._quarantine(cur, task_id, raw, exc.reason)
            return None

    def _quarantine(self, cur: psycopg.Cursor[Any], task_id: str, raw: Any, reason: str) -> None:
        """Move the unusable row of `task_id` to `mesh_quarantine` (if it still holds `raw`)."""
        warnings = self.backend.warnings
        if self.backend.read_only:
            warnings.append(f"damaged task {task_id} ({reason}); left in place by a read-only run")
            return
        from psycopg.types.json import Jsonb

        cur.execute(
            "WITH gone AS (DELETE FROM mesh_tasks WHERE id = %s AND record = %s RETURNING record)"
            " INSERT INTO mesh_quarantine (kind, key, reason, raw)"
            " SELECT %s, %s, %s, record FROM gone",
            (task_id, Jsonb(raw), QUARANTINE_KIND, task_id, reason),
        )
        if cur.rowcount:
            warnings.append(
                f"quarantined task {task_id} ({reason}); its record was moved to the table "
                "mesh_quarantine"
            )

    def get(self, task_id: str) -> Task | None:
        with self.backend.transaction() as cur:
            cur.execute("SELECT record FROM mesh_tasks WHERE id = %s", (task_id,))
            row = cur.fetchone()
            return None if row is None else self._valid(cur, task_id, row[0])

    def exists(self, task_id: str) -> bool:
        with self.backend.transaction() as cur:
            cur.execute("SELECT 1 FROM mesh_tasks WHERE id = %s", (task_id,))
            return cur.fetchone() is not None

    def ids(self) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute("SELECT id FROM mesh_tasks")
            return sorted(str(row[0]) for row in cur.fetchall())

    def all(self) -> list[Task]:
        with self.backend.transaction() as cur:
            cur.execute("SELECT id, record FROM mesh_tasks")
            rows = sorted(cur.fetchall(), key=lambda row: str(row[0]))
            found = (self._valid(cur, str(task_id), raw) for task_id, raw in rows)
            return [task for task in found if task is not None]

    def queued(self) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT id FROM mesh_tasks WHERE state = 'queued' ORDER BY priority DESC, number"
            )
            return [str(row[0]) for row in cur.fetchall()]

    def held_by(self, agent: str) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT id FROM mesh_tasks WHERE claimed_by = %s AND state = ANY(%s)"
                " ORDER BY number",
                (agent, _HELD),
            )
            return [str(row[0]) for row in cur.fetchall()]

    # ---- writing ---------------------------------------------------------------------------

    def _lock(self, cur: psycopg.Cursor[Any], task_id: str, timeout: float) -> Any:
        """The record of `task_id`, its row locked for this transaction (None: no such row);
        `TaskBusy` when another transaction holds it past `timeout` seconds (0: at once)."""
        from psycopg import errors

        try:
            if timeout <= 0:
                cur.execute(
                    "SELECT record FROM mesh_tasks WHERE id = %s FOR UPDATE NOWAIT", (task_id,)
                )
                row = cur.fetchone()
            else:
                # lock_timeout 0 would mean "wait forever": at least one millisecond.
                wait = f"{max(1, math.ceil(timeout * 1000))}ms"
                cur.execute(
                    "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                    (wait,),
                )
                previous = cur.fetchone()
                cur.execute("SELECT record FROM mesh_tasks WHERE id = %s FOR UPDATE", (task_id,))
                row = cur.fetchone()
                # What runs next in this transaction (the audit line) waits as it would have.
                cur.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    (previous[0] if previous else "0",),
                )
        except errors.LockNotAvailable:
            raise busy(task_id, timeout) from None
        return None if row is None else row[0]

    def change(
        self,
        task_id: str,
        decide: Decide,
        *,
        timeout: float = CHANGE_TIMEOUT_S,
        event: Describe | None = None,
    ) -> tuple[Task, Task] | None:
        """One try, and a second under the same operation id when the connection was lost
        midway (`retried`): a change the first try committed is returned, not redone."""
        op = new_op("task")
        return retried(
            self.backend,
            f"look with `mesh task show {task_id}`",
            lambda: self._change(op, task_id, decide, timeout, event),
        )

    def _change(
        self, op: str, task_id: str, decide: Decide, timeout: float, event: Describe | None
    ) -> tuple[Task, Task] | None:
        with self.backend.transaction() as cur:
            writing = not self.backend.read_only
            done = begin(cur, op) if writing else None
            if done is not None:
                return _pair(task_id, done.outcome)
            raw = self._lock(cur, task_id, timeout)
            before = None if raw is None else self._valid(cur, task_id, raw)
            after = None if before is None else deciding("TaskBoard.change", decide, before)
            if before is None or after is None:
                if writing:
                    forget(cur, op)
                return None
            if after.id != task_id:
                raise ValueError(f"a change of task {task_id} returned task {after.id}")
            cur.execute(
                "UPDATE mesh_tasks SET state = %s, priority = %s, claimed_by = %s, record = %s,"
                " updated = now() WHERE id = %s",
                (*_row(after), task_id),
            )
            if event is not None:
                line = deciding2("TaskBoard.change", event, before, after)
                append_or_warn(self.backend.audit_log, self.backend.warnings, line)
            if writing:
                finish(cur, op, [before.to_record(), after.to_record()])
            self.backend.changes.notify(Change(TASKS))
        return before, after

    def add(self, make: Callable[[str], Task]) -> Task:
        """One try, and a second under the same operation id when the connection was lost
        midway: a task the first try added is returned, not added again."""
        op = new_op("task-add")
        return retried(self.backend, "look with `mesh task list`", lambda: self._add(op, make))

    def _add(self, op: str, make: Callable[[str], Task]) -> Task:
        with self.backend.transaction() as cur:
            done = begin(cur, op)
            if done is not None:
                return Task.from_record(done.outcome)
            # One adder at a time: numbered in the order stored (`make` stamps the creation).
            cur.execute("SELECT name FROM mesh_guards WHERE name = 'tasks' FOR UPDATE")
            # Never below a stored number (rows brought in by an import), never reused.
            cur.execute(
                "SELECT setval('mesh_task_numbers', greatest(nextval('mesh_task_numbers'),"
                " (SELECT coalesce(max(number), 0) + 1 FROM mesh_tasks)))"
            )
            row = cur.fetchone()
            assert row is not None  # noqa: S101 -- a SELECT without FROM returns one row
            number = int(row[0])
            task = make(format_id(number))
            if task.id != format_id(number):
                raise ValueError(f"a new task was given id {format_id(number)}, not {task.id}")
            cur.execute(
                "INSERT INTO mesh_tasks (id, number, state, priority, claimed_by, record)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (task.id, number, *_row(task)),
            )
            finish(cur, op, task.to_record())
            self.backend.changes.notify(Change(TASKS))
        return task


def _pair(task_id: str, outcome: Any) -> tuple[Task, Task] | None:
    """The (before, after) a committed try of a change stored (None: it changed nothing)."""
    if outcome is None:
        return None
    before, after = (_checked(task_id, record) for record in outcome)
    return before, after
