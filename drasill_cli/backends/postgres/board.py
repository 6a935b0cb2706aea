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
- `claim_next` is one statement in autocommit (one round trip): the first ready queued row by
  (priority desc, number) `FOR UPDATE SKIP LOCKED`, its update, the operation's `mesh_ops` row,
  the audit row and the count of tasks waiting on dependencies (`_claim_sql`). Racing claimers
  skip each other's rows. Only when it claimed nothing while a ready row was locked does it
  wait for that row, in a transaction with a `lock_timeout`, as `change` does.
- `queued` and `held_by` are index scans of the columns (hints: `change` says what a task is).

A row whose record fails `Task.from_record`, or that holds another task's id, is moved to
`mesh_quarantine` (one line in the backend's warnings) and never returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.connection import LISTENED
from drasill_cli.backends.postgres.ops import (
    begin,
    finish,
    forget,
    new_op,
    retried,
    second_try,
)
from drasill_cli.models import RecordError, Task, stored_task
from drasill_cli.storage.auditlog import append_or_warn
from drasill_cli.storage.board import (
    CHANGE_TIMEOUT_S,
    HELD_STATES,
    Claim,
    Decide,
    Describe,
    TaskBusy,
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

# Whether the task row `t` is ready: every id of its record's `depends_on` names a stored task
# whose state is completed (a missing one waits), as the core's claim decides.
_READY = (
    "NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE WHEN"
    " jsonb_typeof({t}.record -> 'depends_on') = 'array' THEN {t}.record -> 'depends_on'"
    " ELSE '[]'::jsonb END) AS dep(id) LEFT JOIN mesh_tasks AS d ON d.id = dep.id"
    " WHERE d.state IS DISTINCT FROM 'completed')"
)


def _claim_sql(*, skip_locked: bool, in_transaction: bool) -> str:
    """The claim of `claim_next` as one statement. Parameters: actor, actor, at, at, op, the audit
    line's five (`PostgresAuditLog.values`), then (outside a transaction) the channels of
    `LISTENED`. Returns one row: the id claimed, its record before and after, the audit row's
    seq (all NULL when nothing was claimed), how many queued tasks wait on dependencies, how
    many are ready (a ready one left unclaimed was locked), and (outside a transaction) who
    listens, asked only when a task was claimed."""
    # On its own the statement is its own transaction: the operation's row is inserted with
    # the claim (a second try of the operation runs in a transaction after `begin`, which
    # inserted it: here it only gets the outcome).
    noted = (
        "UPDATE mesh_ops SET outcome = to_jsonb(c.id) FROM claimed AS c WHERE op = %s"
        if in_transaction
        else "INSERT INTO mesh_ops (op, outcome) SELECT %s, to_jsonb(c.id) FROM claimed AS c"
    )
    listened = "" if in_transaction else f", CASE WHEN c.id IS NOT NULL THEN {LISTENED} END"
    skip = " SKIP LOCKED" if skip_locked else ""
    ready, waiting, counted = (_READY.format(t=t) for t in ("t", "w", "r"))
    return (
        f"WITH pick AS (SELECT t.id, t.record FROM mesh_tasks AS t"  # noqa: S608 -- constant fragments only; every value is a parameter
        f" WHERE t.state = 'queued' AND jsonb_typeof(t.record) = 'object'"
        f" AND t.record ->> 'state' = 'queued' AND {ready}"
        f" ORDER BY t.priority DESC, t.number FOR UPDATE OF t{skip} LIMIT 1),"
        " claimed AS (UPDATE mesh_tasks AS t SET state = 'claimed', claimed_by = %s,"
        "  record = t.record || jsonb_build_object('state', 'claimed', 'claimed_by',"
        "  %s::text, 'claimed_at', %s::text, 'updated_at', %s::text), updated = now()"
        "  FROM pick WHERE t.id = pick.id"
        "  RETURNING t.id, pick.record AS before, t.record AS after),"
        f" noted AS ({noted}),"
        " line AS (INSERT INTO mesh_audit (at, event, actor, host, details)"
        "  SELECT coalesce(to_timestamp(%s), now()), %s, %s, %s,"
        "  %s::jsonb || jsonb_build_object('task', c.id) FROM claimed AS c RETURNING seq)"
        " SELECT c.id, c.before, c.after, (SELECT seq FROM line),"
        f" (SELECT count(*) FROM mesh_tasks AS w WHERE w.state = 'queued' AND NOT {waiting}),"
        f" (SELECT count(*) FROM mesh_tasks AS r WHERE r.state = 'queued' AND {counted})"
        f"{listened} FROM (SELECT 1) AS one LEFT JOIN claimed AS c ON true"
    )


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
            return stored_task(task_id, raw)
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

    def holders(self) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT DISTINCT claimed_by FROM mesh_tasks"
                " WHERE claimed_by IS NOT NULL AND state = ANY(%s) ORDER BY claimed_by",
                (_HELD,),
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

    def claim_next(self, actor: str, at: str, event: dict[str, Any]) -> Claim:
        """One statement (`_claim_sql`) under an operation id: a second try after a lost
        connection returns the task the first claimed, never claims a second one."""
        op = new_op("claim")
        return retried(
            self.backend,
            f"look with `mesh task list` (is a task claimed by {actor}?)",
            lambda: self._claim_next(op, actor, at, event),
        )

    def _claim_next(self, op: str, actor: str, at: str, event: dict[str, Any]) -> Claim:
        params = (actor, actor, at, at, op, *self.backend.audit_log.values(event))
        idle = self.backend.db.conn.info.transaction_status == _idle()
        while True:
            if second_try() or not idle:
                row = self._claim_in_transaction(op, params, skip_locked=True)
            else:
                rows = self.backend.statement(
                    _claim_sql(skip_locked=True, in_transaction=False),
                    params,
                    Change(TASKS),  # covers MESH (the audit row)
                )
                row = rows[0]
            task_id, before, after, seq, waiting, ready = row
            if task_id is None and ready:
                # A ready task was locked (a racing claimer, or a change of it under way):
                # wait for it, as `change` would, now that nothing else is claimable.
                row = self._claim_in_transaction(op, params, skip_locked=False)
                task_id, before, after, seq, waiting, _ = row
            if task_id is None:
                return Claim(None, int(waiting))
            if seq is not None:  # None: the claim of a first try, found by the second
                self.backend.audit_log.appended([(seq,)])
            task = self._claimed(str(task_id), before, after)
            if task is not None:
                return Claim(task, int(waiting))
            op = new_op("claim")  # a damaged record, quarantined: claim the next one
            params = (actor, actor, at, at, op, *params[5:])

    def _claim_in_transaction(
        self, op: str, params: tuple[Any, ...], *, skip_locked: bool
    ) -> tuple[Any, ...]:
        """The claim in a transaction: a second try (`begin` finds a first that committed), a
        claim nested in an open transaction, or one that waits for a locked ready task."""
        from psycopg import errors

        with self.backend.transaction() as cur:
            done = begin(cur, op)
            if done is not None:
                row = None
                if done.outcome is not None:
                    row = cur.execute(
                        "SELECT id, record, record FROM mesh_tasks WHERE id = %s",
                        (done.outcome,),
                    ).fetchone()
                return (*(row or (None, None, None)), None, 0, 0)
            try:
                if not skip_locked:
                    cur.execute(
                        "SELECT set_config('lock_timeout', %s, true)",
                        (f"{math.ceil(CHANGE_TIMEOUT_S * 1000)}ms",),
                    )
                found = cur.execute(
                    _claim_sql(skip_locked=skip_locked, in_transaction=True), params
                ).fetchone()
            except errors.LockNotAvailable:
                raise TaskBusy(
                    "a queued task is busy: another mesh process held it for "
                    f"{CHANGE_TIMEOUT_S:g}s; try again"
                ) from None
            assert found is not None  # noqa: S101 -- the statement returns one row
            if found[0] is None:
                forget(cur, op)
            else:
                self.backend.changes.notify(Change(TASKS))
            return tuple(found)

    def _claimed(self, task_id: str, before: Any, after: Any) -> Task | None:
        """The task as claimed; None after quarantining a row whose record fails its check
        (looked at only as far as SQL can before the claim: an object, queued, its id)."""
        try:
            stored_task(task_id, before)
            return stored_task(task_id, after)
        except RecordError as exc:
            with self.backend.transaction() as cur:
                self._quarantine(cur, task_id, after, exc.reason)
            return None

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


def _idle() -> Any:
    from psycopg import pq

    return pq.TransactionStatus.IDLE


def _pair(task_id: str, outcome: Any) -> tuple[Task, Task] | None:
    """The (before, after) a committed try of a change stored (None: it changed nothing)."""
    if outcome is None:
        return None
    before, after = (stored_task(task_id, record) for record in outcome)
    return before, after
