"""Tasks: add, claim exactly once, move through the lifecycle, depend on each other, get reviewed.

The rules live here: the state machine, dependencies, who may move a task, review, requeueing
the tasks of a dead claimant (and of one no longer registered), the messages to reviewers and
the audit lines. How tasks are kept
and excluded is the task board's (`mesh.backend.board`, `drasill_cli.storage.board`): every
change is one `board.change`, a read-decide-write under the task's exclusion, so of any number
of racing claimers exactly one wins and only the claimant can move its task.

Ids are short and sort in creation order (`t-0001`, `t-0002`, ..., numbered by the board), so
tables show them whole and people can type them (`7` and `t-7` name `t-0007`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, get_args

from drasill_cli import clock, lockpaths
from drasill_cli.errors import InvalidInput, MeshError, NegativeOutcome, NotFound, OrdinaryOutcome
from drasill_cli.mesh import Mesh
from drasill_cli.models import Task, TaskState
from drasill_cli.names import check_agent_name, has_control_chars
from drasill_cli.storage import auditlog
from drasill_cli.storage.board import (
    HELD_STATES,
    PRIORITY_LIMIT,
    TaskBoard,
    TaskBusy,
    format_id,
    holder,
    id_number,
)
from drasill_cli.waiting import check_wait

__all__ = ["HELD_STATES", "PRIORITY_LIMIT", "TaskBusy", "format_id", "id_number"]

STATES: tuple[str, ...] = get_args(TaskState)
MAX_TITLE_CHARS = 200
_ID_RE = re.compile(r"[a-z0-9-]{1,64}")
_NUMBER_RE = re.compile(r"(?:t-)?0*([0-9]{1,30})")
# Changes wake `claim_next_wait`; this re-check only guards against a change notice that was lost.
WAIT_RECHECK_S = 5.0
# A dependency in one of these states never completes by itself: its dependents are blocked.
BLOCKING_STATES = frozenset({"failed", "abandoned", "cancelled"})
# The states a task may be cancelled from (completed and cancelled are final).
CANCELLABLE = frozenset({"queued", "claimed", "working", "review", "failed", "abandoned"})

Decide = Callable[[Task], Task]


class NothingClaimable(OrdinaryOutcome):
    """No queued task is ready (an ordinary state: exit 1, a plain line)."""

    default_code = "nothing-claimable"


def _board(mesh: Mesh) -> TaskBoard:
    return mesh.backend.board


# ---- reading ---------------------------------------------------------------------------------


def _unknown(task_id: str) -> NotFound:
    return NotFound(f"no task {task_id!r}; see `mesh task list`", code="unknown-task")


def _require(mesh: Mesh, task_id: str) -> Task:
    task = _board(mesh).get(task_id)
    if task is None:
        raise _unknown(task_id)
    return task


def resolve_id(mesh: Mesh, ref: str) -> str:
    """The full id of the task `ref` names: the id itself or a unique prefix of one."""
    ref = ref.strip().lower()
    if not _ID_RE.fullmatch(ref):
        raise InvalidInput(
            f"{ref!r} is not a task id: ids look like t-0007 (the number alone, 7, is enough)",
            code="invalid-task-id",
        )
    board = _board(mesh)
    if board.exists(ref):
        return ref
    number = _NUMBER_RE.fullmatch(ref)
    if number is not None:
        numbered = format_id(int(number.group(1)))
        if board.exists(numbered):
            return numbered
    matches = [task_id for task_id in board.ids() if task_id.startswith(ref)]
    if not matches:
        raise NotFound(f"no task matches {ref!r}; see `mesh task list`", code="unknown-task")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise InvalidInput(
            f"task id prefix {ref!r} is ambiguous ({len(matches)} tasks: {shown}); "
            "give more characters",
            code="ambiguous-task-id",
        )
    return matches[0]


def waits_on(task: dict[str, Any], state_of: Callable[[str], str]) -> list[dict[str, str]]:
    """What a queued task (a task object) waits on: `{id, state}` of each dependency not
    completed (`missing` for one that is not stored); empty for a task in any other state.
    `state_of` names a dependency's state."""
    if task["state"] != "queued":
        return []
    return [
        {"id": dep, "state": state}
        for dep in task["depends_on"]
        if (state := state_of(dep)) != "completed"
    ]


def blocked_for_good(waits: Sequence[dict[str, str]]) -> bool:
    """Whether a task waits on a dependency that will not complete by itself (failed,
    abandoned or cancelled: only `mesh task release --force` or an edit frees it)."""
    return any(dep["state"] in BLOCKING_STATES for dep in waits)


def _with_waits(task: Task | dict[str, Any], state_of: Callable[[str], str]) -> dict[str, Any]:
    """The task object with `waits_on` and `blocked`."""
    record = task.to_record() if isinstance(task, Task) else task
    record["waits_on"] = waits_on(record, state_of)
    record["blocked"] = blocked_for_good(record["waits_on"])
    return record


def _state_of(mesh: Mesh) -> Callable[[str], str]:
    """A dependency's state as stored now (`missing` when it is not), each read once."""
    seen: dict[str, str] = {}

    def state_of(task_id: str) -> str:
        if task_id not in seen:
            found = _board(mesh).get(task_id)
            seen[task_id] = found.state if found is not None else "missing"
        return seen[task_id]

    return state_of


def get_task(mesh: Mesh, ref: str) -> dict[str, Any]:
    """The task object for an id or unique id prefix (with `waits_on` and `blocked`, as
    `list_tasks`); NotFound (exit 3) if there is none."""
    return _with_waits(_require(mesh, resolve_id(mesh, ref)), _state_of(mesh))


def list_tasks(
    mesh: Mesh,
    state: str | None = None,
    *,
    ready: bool = False,
    mine: str | None = None,
) -> list[dict[str, Any]]:
    """Every task (or those in `state`), oldest first, each with `waits_on` (the dependencies
    a queued task waits on, `{id, state}`) and `blocked` (one of them failed, was abandoned or
    cancelled). `ready`: only queued tasks that wait on nothing (what `claim --next` could
    take); `mine`: only the tasks that agent created or claimed."""
    if state is not None and state not in STATES:
        raise InvalidInput(
            f"unknown task state {state!r}; use one of {', '.join(STATES)}",
            code="invalid-state",
        )
    if ready and state not in (None, "queued"):
        raise InvalidInput(
            f"--ready lists queued tasks, so it cannot go with --state {state}; drop one",
            code="invalid-usage",
        )
    if mine is not None:
        check_agent_name(mine)
    every = _board(mesh).all()
    states = {task.id: task.state for task in every}
    found = [
        _with_waits(task, lambda dep: states.get(dep, "missing"))
        for task in every
        if (state is None or task.state == state)
        and (mine is None or mine in (task.created_by, task.claimed_by))
    ]
    if ready:
        found = [task for task in found if task["state"] == "queued" and not task["waits_on"]]
    # Creation order; the time first keeps it across id formats (meshes made before short ids).
    return sorted(found, key=lambda task: (task["created_at"], task["id"]))


# ---- writing ---------------------------------------------------------------------------------


def _change(
    mesh: Mesh,
    task_id: str,
    actor: str | None,
    event: str,
    decide: Decide,
    **details: Any,
) -> dict[str, Any]:
    """Read, decide and write one task under its exclusion, and audit the change.

    `decide` raises (nothing is written) or returns the new record. The audit line, with the
    state before and after, is appended under the exclusion, so the log orders each task's
    events as they happened.
    """
    if actor is not None:
        check_agent_name(actor)

    def audit(before: Task, after: Task) -> dict[str, Any]:
        if before.claimed_by is not None and before.claimed_by != after.claimed_by:
            details["previous_claimant"] = before.claimed_by
        return auditlog.event(
            event, actor, task=task_id, state=after.state, from_state=before.state, **details
        )

    changed = _board(mesh).change(
        task_id, lambda task: decide(task).replace(updated_at=clock.iso()), event=audit
    )
    if changed is None:  # gone since it was named (a damaged record, quarantined)
        raise _unknown(task_id)
    return changed[1].to_record()


# ---- add -------------------------------------------------------------------------------------


def _check_text(field: str, value: str, limit: int) -> None:
    if "\0" in value:  # a task is kept as jsonb on PostgreSQL, which cannot hold U+0000
        raise InvalidInput(
            f"--{field} holds a NUL character (U+0000), which a task cannot keep; remove it",
            code=f"invalid-{field}",
        )
    if len(value.encode("utf-8")) > limit:
        raise InvalidInput(
            f"--{field} is {len(value.encode('utf-8'))} bytes, over the limit of {limit} "
            "(messages.max_body_bytes); put long text in a file and refer to its path",
            code=f"invalid-{field}",
        )


def _check_title(title: str) -> str:
    title = title.strip()
    if not title or len(title) > MAX_TITLE_CHARS or has_control_chars(title):
        raise InvalidInput(
            f"a task title must be one line of 1 to {MAX_TITLE_CHARS} printable characters, "
            f"got {title!r}; put details in --body",
            code="invalid-title",
        )
    return title


def _find_cycle(mesh: Mesh, start: str) -> list[str] | None:
    """A cycle of unfinished tasks reachable from `start` (the ids along it), or None.

    Dependencies are fixed when a task is added and must exist then, so only edited or
    damaged records can hold a cycle. Completed tasks end the walk: they block nobody,
    whatever they depend on, and that keeps the walk short in long pipelines.
    """
    finished: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()
    pending: list[Iterator[str]] = []

    def enter(task_id: str) -> None:
        task = _board(mesh).get(task_id)
        path.append(task_id)
        on_path.add(task_id)
        unfinished = task is not None and task.state != "completed"
        pending.append(iter(task.depends_on if task is not None and unfinished else []))

    enter(start)
    while pending:
        dep = next(pending[-1], None)
        if dep is None:
            pending.pop()
            on_path.discard(path[-1])
            finished.add(path.pop())
        elif dep in on_path:
            return [*path[path.index(dep) :], dep]
        elif dep not in finished:
            enter(dep)
    return None


def _check_dependencies(mesh: Mesh, refs: Sequence[str]) -> list[str]:
    """Full ids of the dependencies, each existing and free of cycles; else exit 2."""
    resolved: list[str] = []
    for ref in refs:
        try:
            task_id = resolve_id(mesh, ref)
        except NotFound:
            raise InvalidInput(
                f"--depends {ref!r}: no such task; add it first (see `mesh task list`)",
                code="unknown-dependency",
            ) from None
        if task_id not in resolved:
            resolved.append(task_id)
    for task_id in resolved:
        cycle = _find_cycle(mesh, task_id)
        if cycle is not None:
            raise InvalidInput(
                f"--depends {task_id}: its dependencies form a cycle ({' -> '.join(cycle)}), "
                "so it could never run; fix those tasks first",
                code="dependency-cycle",
            )
    return resolved


def _check_priority(priority: int) -> None:
    if not -PRIORITY_LIMIT <= priority <= PRIORITY_LIMIT:
        raise InvalidInput(
            f"--priority must be between {-PRIORITY_LIMIT} and {PRIORITY_LIMIT}, got {priority}",
            code="invalid-priority",
        )


def add_task(
    mesh: Mesh,
    title: str,
    *,
    actor: str | None = None,
    body: str = "",
    priority: int = 0,
    depends_on: Sequence[str] = (),
    review: bool = False,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Queue a new task (returned with what it waits on, as `get_task`); invalid input (exit 2)
    writes nothing.

    Its `cwd` is the top of the git work tree holding `cwd` (default: the current directory)
    when there is one, else `cwd` itself: workers start where the whole project is.
    """
    if actor is not None:
        check_agent_name(actor)
    title = _check_title(title)
    limit = mesh.config.messages.max_body_bytes
    _check_text("body", body, limit)
    _check_priority(priority)
    deps = _check_dependencies(mesh, depends_on)
    where = cwd or os.getcwd()
    where = lockpaths.work_tree_top(where) or where

    def make(task_id: str) -> Task:
        now = clock.iso()  # taken as the id is: creation times follow the numbering
        return Task(
            id=task_id,
            title=title,
            body=body,
            state="queued",
            priority=priority,
            created_by=actor,
            created_at=now,
            updated_at=now,
            depends_on=deps,
            review=review,
            cwd=where,
        )

    task = _board(mesh).add(make)
    mesh.append_audit_event(
        "task-add", actor, task=task.id, state=task.state, priority=priority, depends_on=deps
    )
    return _with_waits(task, _state_of(mesh))


# ---- claim -----------------------------------------------------------------------------------


def _pending_dependencies(mesh: Mesh, task: Task, cache: dict[str, str]) -> list[str]:
    """`id (state)` of each dependency not completed yet (completed is final, so cacheable)."""
    pending = []
    for dep in task.depends_on:
        if dep not in cache:
            found = _board(mesh).get(dep)
            cache[dep] = found.state if found is not None else "missing"
        if cache[dep] != "completed":
            pending.append(f"{dep} ({cache[dep]})")
    return pending


def _claim_lost(task: Task) -> NegativeOutcome:
    by = f" by {task.claimed_by}" if task.claimed_by else ""
    return NegativeOutcome(
        f"claim lost: task {task.id} is {task.state}{by}; take another with `mesh claim --next`",
        code="claim-lost",
        state=task.state,
        claimed_by=task.claimed_by,
    )


def _waiting_on(task: Task, known: dict[str, str]) -> list[str]:
    """`id (state)` of each dependency of `task` not completed by `known` (the states looked
    up before the task's exclusion by `_pending_dependencies`; completed is final, so a look
    before stays true). One not looked up then (the task changed since) counts as waiting."""
    return [
        f"{dep} ({known.get(dep, 'not looked at yet: claim again')})"
        for dep in task.depends_on
        if known.get(dep) != "completed"
    ]


def _claimed(task: Task, actor: str, known: dict[str, str]) -> Task:
    """The decision of a claim: the task held by `actor`, or NegativeOutcome (claim lost).

    `known` holds the dependencies' states, looked up before the task's exclusion: the
    decision reads nothing else (issue 26).
    """
    if task.state != "queued":
        raise _claim_lost(task)
    pending = _waiting_on(task, known)
    if pending:
        raise NegativeOutcome(
            f"task {task.id} waits for its dependencies: {', '.join(pending)}; claim it once "
            "they are completed, or take another with `mesh claim --next`",
            code="dependencies-pending",
        )
    return task.replace(state="claimed", claimed_by=actor, claimed_at=clock.iso())


def _check_claimant_alive(mesh: Mesh, actor: str) -> None:
    """Refuse (exit 1) a registered agent that is dead: prune would take its claim back.

    An unregistered claimant never gets this far (`Mesh.require_registered`).
    """
    if not mesh.is_registered(actor):
        return
    from drasill_cli import presence

    if not presence.is_dead(mesh, actor):
        return
    raise NegativeOutcome(
        f"{actor} is registered but dead (its process or session is gone), so a task it "
        "claimed would go back to the queue at the next prune; register it again with its "
        f"live process first: `mesh register {actor} --pid PID` (or `--replace`)",
        code="claimant-dead",
    )


def claim(mesh: Mesh, actor: str, ref: str) -> dict[str, Any]:
    """Claim one task: exactly one of any number of racing claimers wins, the others exit 1.

    A registered claimant that is dead is refused (NegativeOutcome `claimant-dead`).
    """
    check_agent_name(actor)
    task_id = resolve_id(mesh, ref)
    seen = _require(mesh, task_id)
    if seen.state != "queued":
        # A task is stored whole, so this look without exclusion is a true past state: losers
        # of a race leave without waiting for the winner's change.
        raise _claim_lost(seen)
    mesh.require_registered(actor, f"claim task {task_id}")
    _check_claimant_alive(mesh, actor)
    known: dict[str, str] = {}
    _pending_dependencies(mesh, seen, known)  # before the exclusion: inside, it only compares
    return _change(mesh, task_id, actor, "task-claim", lambda task: _claimed(task, actor, known))


def claim_next(mesh: Mesh, actor: str) -> dict[str, Any]:
    """Claim the highest-priority, oldest queued task whose dependencies are all completed.

    One `TaskBoard.claim_next` (one statement on PostgreSQL): racing claimers each get a
    different task, and one that is busy is waited for only when nothing else could be
    claimed. A registered claimant that is dead is refused (NegativeOutcome `claimant-dead`).
    """
    check_agent_name(actor)
    mesh.require_registered(actor, "claim a task")
    _check_claimant_alive(mesh, actor)
    event = auditlog.event("task-claim", actor, state="claimed", from_state="queued", next=True)
    claim = _board(mesh).claim_next(actor, clock.iso(), event)
    if claim.task is not None:
        return claim.task.to_record()
    waiting = claim.waiting
    waits = _waiting_tasks(mesh) if waiting else []
    if waits:
        why = (
            f"{len(waits)} queued task(s) wait for dependencies that are not completed: "
            + "; ".join(_waits_line(task) for task in waits[:WAITS_NAMED])
            + (f"; and {len(waits) - WAITS_NAMED} more" if len(waits) > WAITS_NAMED else "")
            + "; see `mesh task list`"
        )
    elif waiting:  # they moved on since the claim looked: try again
        why = "the tasks that waited for dependencies changed meanwhile; claim again"
    else:
        why = "no task is queued; add work with `mesh task add`"
    raise NothingClaimable(f"nothing to claim: {why}", waiting=waiting, waits=waits)


# How many waiting tasks the message of a claim that found nothing names (JSON lists them all).
WAITS_NAMED = 5


def _waiting_tasks(mesh: Mesh) -> list[dict[str, Any]]:
    """The queued tasks that wait on a dependency, each as `{id, title, waits_on, blocked}`,
    in claim order (read after the claim, outside every exclusion)."""
    return [
        {key: task[key] for key in ("id", "title", "priority", "waits_on", "blocked")}
        for task in sorted(
            list_tasks(mesh, "queued"), key=lambda task: (-task["priority"], task["id"])
        )
        if task["waits_on"]
    ]


def _waits_line(task: dict[str, Any]) -> str:
    """`t-0002 waits on t-0001 (working)`, or `t-0003 is blocked for good by t-0001 (failed)`."""
    deps = ", ".join(f"{dep['id']} ({dep['state']})" for dep in task["waits_on"])
    if task["blocked"]:
        return f"{task['id']} is blocked for good by {deps}"
    return f"{task['id']} waits on {deps}"


def claim_next_wait(mesh: Mesh, actor: str, wait: float) -> dict[str, Any]:
    """`claim_next`, waiting up to `wait` seconds (inf: no limit) for a task to become claimable.

    Woken by changes of the task board (a task added, released, requeued, or a dependency
    completed), with a slow re-check in case a notice is lost; never a polling loop. The watch
    starts before the first try, so a change in between still wakes it. A store lost meanwhile
    (a database restarting) is waited for (`[store] reconnect_timeout`).
    """
    check_wait(wait, "until a task is ready")
    if wait == 0:
        return claim_next(mesh, actor)
    from drasill_cli.keepalive import kept_alive
    from drasill_cli.storage.changes import TASKS
    from drasill_cli.waiting import enduring

    deadline = time.monotonic() + wait
    patience = mesh.config.store.reconnect_timeout
    with kept_alive(mesh, actor), mesh.backend.changes.watch(TASKS) as changes:
        while True:
            try:  # across a restart of the store's server
                return enduring(lambda: claim_next(mesh, actor), patience)
            except NothingClaimable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NothingClaimable(
                        f"{exc.message.replace('nothing to claim', 'still nothing to claim', 1)}"
                        f" (waited {wait:g}s); wait again with `mesh claim --next --wait "
                        "SECONDS`",
                        **exc.details,
                    ) from None
            changes.wait(min(remaining, WAIT_RECHECK_S))


# ---- lifecycle -------------------------------------------------------------------------------


def _revive_hint(task: Task) -> str:
    if task.state in ("failed", "abandoned"):
        return f"; requeue it with `mesh task release {task.id} --force`"
    if task.state == "queued":
        return f"; claim it first with `mesh claim {task.id}`"
    return ""


def _own(task: Task, actor: str, verb: str) -> None:
    """Refuse (exit 1) unless `actor` is the claimant of the claimed or working task."""
    if task.claimed_by is None:
        raise NegativeOutcome(
            f"task {task.id} is {task.state} and nobody holds it{_revive_hint(task)}",
            code="not-claimant",
        )
    if task.claimed_by != actor:
        raise NegativeOutcome(
            f"task {task.id} is claimed by {task.claimed_by}, not {actor}; only the claimant may "
            f"{verb} it",
            code="not-claimant",
            claimed_by=task.claimed_by,
        )
    if task.state not in HELD_STATES:
        raise NegativeOutcome(
            f"cannot {verb} task {task.id}: it is {task.state}, not claimed or working"
            f"{_revive_hint(task)}",
            code="wrong-state",
            state=task.state,
        )


def _registered_id(mesh: Mesh, ref: str, actor: str, verb: str) -> str:
    """The id `ref` names, once `actor` is known to be registered (NotRegistered, exit 3):
    only a registered agent moves a claimed task."""
    task_id = resolve_id(mesh, ref)
    mesh.require_registered(actor, f"{verb} task {task_id}")
    return task_id


def _with_result(task: Task, result: str | None, limit: int, **update: Any) -> Task:
    if result is not None:
        _check_text("result", result, limit)
        update["result"] = result
    return task.replace(**update)


def start(mesh: Mesh, ref: str, actor: str, result: str | None = None) -> dict[str, Any]:
    """The claimant begins work: claimed -> working (repeating it is harmless)."""
    limit = mesh.config.messages.max_body_bytes

    def decide(task: Task) -> Task:
        _own(task, actor, "start")
        return _with_result(task, result, limit, state="working")

    return _change(mesh, _registered_id(mesh, ref, actor, "start"), actor, "task-start", decide)


def done(mesh: Mesh, ref: str, actor: str, result: str | None = None) -> dict[str, Any]:
    """The claimant finishes: completed, or review for a task added with `--review`.

    A task entering review is announced by message to its creator, or to every other live
    agent when the creator is the author or is not a registered agent; the returned task
    lists them under `notified`.
    """
    limit = mesh.config.messages.max_body_bytes

    def decide(task: Task) -> Task:
        _own(task, actor, "finish")
        return _with_result(task, result, limit, state="review" if task.review else "completed")

    task = _change(mesh, _registered_id(mesh, ref, actor, "finish"), actor, "task-done", decide)
    _release_hook_locks(mesh, actor, task["id"])
    if task["state"] == "review":
        task["notified"] = _tell(mesh, actor, _reviewers(mesh, task, actor), _review_request(task))
    return task


def fail(mesh: Mesh, ref: str, actor: str, result: str | None = None) -> dict[str, Any]:
    """The claimant gives up for good: failed (requeue it with `release --force`)."""
    limit = mesh.config.messages.max_body_bytes

    def decide(task: Task) -> Task:
        _own(task, actor, "fail")
        return _with_result(task, result, limit, state="failed")

    task = _change(mesh, _registered_id(mesh, ref, actor, "fail"), actor, "task-fail", decide)
    _release_hook_locks(mesh, actor, task["id"])
    return task


FORCE_RELEASABLE = frozenset({"claimed", "working", "review", "failed", "abandoned"})


def release(
    mesh: Mesh, ref: str, actor: str, result: str | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Put the task back in the queue, only if it is still the actor's (unless `force`).

    `force` lets any agent requeue a task from any state but queued and completed: a failed or
    abandoned task gets another run, and a claimed, working or review task is taken back from
    its claimant. `attempts` is kept.
    """
    limit = mesh.config.messages.max_body_bytes
    claimant: list[str | None] = [None]

    def decide(task: Task) -> Task:
        claimant[0] = task.claimed_by
        if not force:
            _own(task, actor, "release")
        elif task.state not in FORCE_RELEASABLE:
            raise NegativeOutcome(
                f"task {task.id} is {task.state}; only a task that is "
                f"{', '.join(sorted(FORCE_RELEASABLE))} can be put back in the queue",
                code="wrong-state",
                state=task.state,
            )
        return _with_result(
            task, result, limit, state="queued", claimed_by=None, claimed_at=None, approved_by=None
        )

    task_id = resolve_id(mesh, ref) if force else _registered_id(mesh, ref, actor, "release")
    task = _change(mesh, task_id, actor, "task-release", decide, forced=force)
    _release_hook_locks(mesh, claimant[0], task["id"])
    return task


def cancel(
    mesh: Mesh, ref: str, actor: str | None, note: str | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Cancel a task for good: `cancelled`, a final state (its dependents are blocked).

    Only its creator may, unless `force`; a completed or cancelled task cannot be. A task held
    by a claimant is taken from it, and the claimant is told by message (under `notified`).
    `note` (why) is kept in the task's `result` when the task has none, and in the audit event.
    """
    if actor is not None:
        check_agent_name(actor)
    checked = _check_note(note, mesh.config.messages.max_body_bytes, required=False)

    def decide(task: Task) -> Task:
        if task.state not in CANCELLABLE:
            raise NegativeOutcome(
                f"task {task.id} is {task.state}, which is final; only a task that is "
                f"{', '.join(sorted(CANCELLABLE))} can be cancelled",
                code="wrong-state",
                state=task.state,
            )
        if not force and (actor is None or actor != task.created_by):
            by = task.created_by or "nobody named"
            raise NegativeOutcome(
                f"task {task.id} was created by {by}, not {actor or 'an unnamed caller'}; "
                f"only its creator may cancel it; add --force to cancel it anyway",
                code="not-creator",
                created_by=task.created_by,
            )
        result = task.result if task.result or checked is None else f"cancelled: {checked}"
        return task.replace(state="cancelled", result=result)

    task = _change(
        mesh, resolve_id(mesh, ref), actor, "task-cancel", decide, note=checked, forced=force
    )
    claimant = task["claimed_by"]
    if claimant is not None and claimant != actor:
        why = f": {_excerpt(checked, task['id'])}" if checked else ""
        body = (
            f'task {task["id"]} "{task["title"]}" was cancelled by {actor or "someone"}{why}\n'
            "Stop work on it; it is no longer yours to finish."
        )
        task["notified"] = _tell(mesh, actor or "mesh", [claimant], body)
    return task


def edit(
    mesh: Mesh,
    ref: str,
    actor: str | None,
    *,
    title: str | None = None,
    body: str | None = None,
    priority: int | None = None,
    depends_on: Sequence[str] | None = None,
    review: bool | None = None,
) -> dict[str, Any]:
    """Change a queued task's title, body, priority, dependencies (replaced whole) or review.

    Invalid input (exit 2) writes nothing; a task no longer queued is refused (exit 1, naming
    its state): once claimed, its claimant works on what it read.
    """
    if actor is not None:
        check_agent_name(actor)
    update: dict[str, Any] = {}
    if title is not None:
        update["title"] = _check_title(title)
    if body is not None:
        _check_text("body", body, mesh.config.messages.max_body_bytes)
        update["body"] = body
    if priority is not None:
        _check_priority(priority)
        update["priority"] = priority
    if review is not None:
        update["review"] = review
    task_id = resolve_id(mesh, ref)
    if depends_on is not None:
        deps = _check_dependencies(mesh, depends_on)
        _check_not_reaching(mesh, task_id, deps)
        update["depends_on"] = deps
    if not update:
        raise InvalidInput(
            "nothing to change: give --title, --body, --priority, --depends, --review or "
            "--no-review",
            code="nothing-to-change",
        )

    def decide(task: Task) -> Task:
        if task.state != "queued":
            raise NegativeOutcome(
                f"task {task.id} is {task.state}, not queued; only a queued task can be "
                "edited (add a new task instead)",
                code="wrong-state",
                state=task.state,
            )
        return task.replace(**update)

    edited = _change(mesh, task_id, actor, "task-edit", decide, changed=sorted(update))
    return _with_waits(edited, _state_of(mesh))


def _check_not_reaching(mesh: Mesh, task_id: str, deps: Sequence[str]) -> None:
    """Refuse (exit 2) dependencies through which `task_id` would wait on itself."""
    seen: set[str] = set()
    trail: dict[str, str | None] = dict.fromkeys(deps)
    pending = list(deps)
    while pending:
        current = pending.pop()
        if current == task_id:
            chain = [current]
            step = trail[current]
            while step is not None:
                chain.append(step)
                step = trail[step]
            loop = " -> ".join([task_id, *reversed(chain)])
            raise InvalidInput(
                f"--depends: {task_id} would wait on itself ({loop}), so it could never run; "
                "drop that dependency",
                code="dependency-cycle",
            )
        if current in seen:
            continue
        seen.add(current)
        found = _board(mesh).get(current)
        if found is None or found.state == "completed":
            continue
        for dep in found.depends_on:
            if dep not in seen:
                trail.setdefault(dep, current)
                pending.append(dep)


def _release_hook_locks(mesh: Mesh, claimant: str | None, task_id: str) -> None:
    """After a task ended for its claimant (done, fail, release; committed): release the locks
    the agent CLI's hooks took for it (drasill_cli.hooks; contract "Agents held by the mesh").
    Idempotent (the hook's next call would do it too), so a failure here is a warning: the
    task's change stands."""
    if claimant is None:
        return
    from drasill_cli import locks

    try:
        locks.release_task_hook_locks(mesh, claimant, task_id)
    except MeshError as exc:
        mesh.warnings.append(f"could not release the hook locks of task {task_id}: {exc}")


def _reviewable(task: Task, actor: str, verb: str) -> None:
    """Refuse (exit 1) unless the task is in review and `actor` is not its author."""
    if task.state != "review":
        raise NegativeOutcome(
            f"task {task.id} is {task.state}, not review; only a task added with --review "
            f"and marked done can be {'approved' if verb == 'approve' else 'rejected'}",
            code="wrong-state",
            state=task.state,
        )
    if task.claimed_by == actor:
        raise NegativeOutcome(
            f"{actor} did task {task.id} and cannot {verb} its own work; ask another "
            f"agent to run `mesh task {verb} {task.id}`",
            code="self-approval" if verb == "approve" else "self-review",
        )


def _check_note(note: str | None, limit: int, *, required: bool) -> str | None:
    if note is not None:
        note = note.strip()
        _check_text("note", note, limit)
    if required and not note:
        raise InvalidInput(
            "a rejection needs --note TEXT saying what to fix (it is sent to the author)",
            code="missing-note",
        )
    return note or None


def _review(
    mesh: Mesh, ref: str, actor: str, verb: str, note: str | None, **update: Any
) -> dict[str, Any]:
    """A reviewer's verdict on a task in review (not its author's): `update` applied, the
    note (required to reject) kept in `review_note`, the step audited as `task-<verb>`."""
    check_agent_name(actor)
    checked = _check_note(note, mesh.config.messages.max_body_bytes, required=verb == "reject")

    def decide(task: Task) -> Task:
        _reviewable(task, actor, verb)
        return task.replace(review_note=checked, **update)

    return _change(mesh, resolve_id(mesh, ref), actor, f"task-{verb}", decide, note=checked)


def approve(mesh: Mesh, ref: str, actor: str, note: str | None = None) -> dict[str, Any]:
    """A reviewer other than the author completes a task in review.

    The author's `result` is kept; the reviewer's words go to `review_note`, and the author is
    told by message (listed under `notified`).
    """
    task = _review(mesh, ref, actor, "approve", note, state="completed", approved_by=actor)
    note = task["review_note"]
    said = f": {_excerpt(note, task['id'])}" if note else ""
    body = f'task {task["id"]} "{task["title"]}" was approved by {actor} and is completed{said}'
    task["notified"] = _tell(mesh, actor, [task["claimed_by"]], body)
    return task


def reject(mesh: Mesh, ref: str, actor: str, note: str) -> dict[str, Any]:
    """A reviewer other than the author sends a task in review back to `working`, with the
    same claimant, who gets `note` by message (the author's `result` is kept)."""
    task = _review(mesh, ref, actor, "reject", note, state="working", approved_by=None)
    body = (
        f'task {task["id"]} "{task["title"]}" was sent back to you by {actor}: '
        f"{_excerpt(task['review_note'], task['id'])}\n"
        f"It is yours again (working): fix it, then `mesh task done {task['id']} --result "
        '"what changed"` sends it to review again.'
    )
    task["notified"] = _tell(mesh, actor, [task["claimed_by"]], body)
    return task


def _reviewers(mesh: Mesh, task: dict[str, Any], author: str) -> list[str]:
    """Who hears that a task entered review: its creator, unless the creator did it (or is
    not a registered agent); then every other live agent."""
    creator = task["created_by"]
    if creator is not None and creator != author and mesh.is_registered(creator):
        return [creator]
    from drasill_cli import presence

    return [a["name"] for a in presence.list_agents(mesh) if a["name"] != author]


def reviews_for(mesh: Mesh, actor: str) -> list[dict[str, Any]]:
    """Tasks in review waiting on `actor`: not its own work, and it is one of those asked to
    review them (`_reviewers`: the creator, or every other live agent when the creator did
    it); highest priority first, then the longest waiting."""
    check_agent_name(actor)
    found = [
        task
        for task in list_tasks(mesh, "review")
        if task["claimed_by"] != actor and actor in _reviewers(mesh, task, task["claimed_by"])
    ]
    found.sort(key=lambda task: (-task["priority"], task["updated_at"], task["id"]))
    return found


def _excerpt(text: str, task_id: str, limit: int = 1000) -> str:
    """`text`, cut to `limit` characters with a pointer to the whole (messages have a limit)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (all of it: mesh task show {task_id})"


def _review_request(task: dict[str, Any]) -> str:
    result = (task["result"] or "").strip()
    said = f"\nIts result: {_excerpt(result, task['id'], 300)}" if result else ""
    return (
        f'review requested: task {task["id"]} "{task["title"]}" was done by '
        f"{task['claimed_by']} and waits for review.{said}\n"
        f"Look with `mesh task show {task['id']}`, then `mesh task approve {task['id']} --note "
        f'"..."` or `mesh task reject {task["id"]} --note "what to fix"`.'
    )


def _tell(mesh: Mesh, sender: str, recipients: Sequence[str | None], body: str) -> list[str]:
    """Message each registered recipient; returns who was told. A failure is a warning: the
    task change it reports has already happened."""
    from drasill_cli import messages

    told = []
    for name in dict.fromkeys(r for r in recipients if r is not None and r != sender):
        if not mesh.is_registered(name):
            continue
        try:
            messages.send(mesh, name, body, sender=sender)
        except MeshError as exc:
            mesh.warnings.append(f"could not tell {name}: {exc}")
            continue
        told.append(name)
    return told


def after_claimant_left(task: Task, *, died: bool, max_attempts: int) -> Task:
    """`task` as it goes back when its claimant left: a claimant that died costs an attempt, and
    a task whose attempts reach `max_attempts` is abandoned instead of queued; one that
    unregistered (`died` False) leaves it queued with its attempts unchanged. Pure: prune's
    dry run asks it too."""
    attempts = task.attempts + 1 if died else task.attempts
    gone = died and attempts >= max_attempts
    return task.replace(
        state="abandoned" if gone else "queued",
        claimed_by=None,
        claimed_at=None,
        attempts=attempts,
        updated_at=clock.iso(),
    )


def requeue_tasks_of(
    mesh: Mesh, agent_name: str, *, died: bool = True, until: float | None = None
) -> list[dict[str, Any]]:
    """Return an agent's claimed and working tasks to the queue.

    With `died` (the caller decides the agent is dead), each counts as a failed attempt:
    attempts + 1, and a task whose attempts reach `lifecycle.max_attempts` is abandoned instead
    (`mesh task release ID --force` requeues it). With `died=False` (the agent was
    unregistered) the tasks go back to queued with attempts unchanged. Each task is changed
    under its exclusion and only while it is still held by `agent_name`, so running this twice, or
    from several prune processes at once, changes each task once. With `until` (epoch seconds:
    when the agent was retired), only the tasks claimed by then: a process that registered the
    name since keeps what it claimed.
    """
    check_agent_name(agent_name)
    max_attempts = mesh.config.lifecycle.max_attempts
    board = _board(mesh)
    changed = []

    def decide(before: Task) -> Task | None:
        if holder(before) != agent_name:
            return None  # moved on since it was listed
        claimed = before.claimed_at
        if until is not None and claimed is not None and clock.parse_iso(claimed) > until:
            return None  # claimed by a new holder of the name
        return after_claimant_left(before, died=died, max_attempts=max_attempts)

    for task_id in board.held_by(agent_name):
        done = board.change(task_id, decide, event=_left_event(died))
        if done is not None:
            changed.append(done[1].to_record())
    return changed


def _left_event(died: bool) -> Callable[[Task, Task], dict[str, Any]]:
    """The audit event of a task given back because its claimant left (`after_claimant_left`)."""

    def audit(before: Task, after: Task) -> dict[str, Any]:
        return auditlog.event(
            "task-abandon" if after.state == "abandoned" else "task-requeue",
            None,
            task=after.id,
            state=after.state,
            agent=before.claimed_by,
            attempts=after.attempts,
            reason="claimant dead" if died else "claimant unregistered",
        )

    return audit


# The stamps that say when a held task was last taken or changed (see `held_unregistered`).
_TAKEN_STAMPS = ("claimed_at", "updated_at")


def _stamps_reset(task: Task) -> bool:
    """Whether a stamp of `task` lay in the future (a clock that stepped back): read as now."""
    return any(stamp in task.clock_reset for stamp in _TAKEN_STAMPS)


def held_unregistered(task: Task, registered: Collection[str], until: float) -> bool:
    """Whether `task` is claimed or working by a name not in `registered` (the names registered
    when the caller looked, at `until` or later), claimed and last changed by `until`: what a
    process that registered the name after that look claimed or moved is not (it is that
    process's). Only compares: a decision under the task's exclusion asks it too."""
    claimant = holder(task)
    if claimant is None or claimant in registered or _stamps_reset(task):
        return False
    return all(
        clock.parse_iso(stamp) <= until
        for stamp in (task.claimed_at, task.updated_at)
        if stamp is not None
    )


def requeue_unregistered(
    mesh: Mesh, registered: Collection[str], *, until: float
) -> list[dict[str, Any]]:
    """Return to the queue every claimed or working task whose claimant is not registered, as
    for a claimant that unregistered (attempts unchanged; audited "claimant unregistered").

    `registered` holds the names registered when the caller looked, and `until` is a moment
    before that look (less the margin of the hosts' clocks): only a task claimed and last changed
    by then is requeued (`held_unregistered`), re-checked under its exclusion by comparing only,
    so a name registered again after the look keeps what it claims or moves, and racing callers
    change each task once. Such a task was claimed before claiming needed a registered name, or
    escaped its claimant's retirement (a claim stamped after the retirement's cut by a clock
    running ahead). A task whose stamps lay in the future (a clock that stepped back) gets them
    stored as now instead, so it ages from here and a later call requeues it. Reads only the
    tasks of names that hold some (`TaskBoard.holders`).
    """
    max_attempts = mesh.config.lifecycle.max_attempts
    board = _board(mesh)
    changed = []
    for name in board.holders():
        if name in registered:
            continue
        for task_id in board.held_by(name):
            reset: list[Task] = []

            def decide(before: Task, name: str = name, reset: list[Task] = reset) -> Task | None:
                if held_unregistered(before, registered, until):
                    return after_claimant_left(before, died=False, max_attempts=max_attempts)
                if holder(before) == name and _stamps_reset(before):
                    reset.append(before)  # stored as now below: it ages from here
                return None  # moved on since it was listed, or taken again since the look

            done = board.change(task_id, decide, event=_left_event(died=False))
            if done is not None:
                changed.append(done[1].to_record())
            elif reset:
                board.change(task_id, lambda before: before if _stamps_reset(before) else None)
    return changed
