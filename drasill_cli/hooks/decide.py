"""What the mesh does for each hook event, on top of the core (agents, locks, messages, tasks).

Each function takes an opened mesh, the agent the hook acts as, and the neutral `Event`, and
returns the neutral `Answer`; the protocols module renders it for the CLI. The contract's
rules ("Agents held by the mesh"):

- session start: register (or refresh) the agent with the CLI's pid, and the `mesh prompt`
  text as context;
- before an edit: a path another agent holds in a conflicting mode is refused, naming holder,
  mode and lease end; otherwise the agent takes (or renews) a write lock, with the normal lock
  semantics (`locks.acquire`: repository-relative inside a git work tree). A lock taken so is
  marked in its record (`hook`: the CLI, its session and the task the agent had claimed), so it
  is released when that task ends (`release_for_ended_tasks`, run on every hook call), at
  session end (`release_hook_locks`), or by its lease. A lock the agent took itself is renewed
  and never marked;
- after a tool call and on prompt submit: unread mail into the context, consumed once as by
  `mesh inbox` (urgent first), at most `MAIL_PER_CALL`, then a line saying how many more wait;
- stop: refused while mail is unread, the mail being the reason, unless the CLI says it is
  already continuing because of a stop hook; a claimed task still open is reminded once (the
  agent record remembers which task, `hook_reminded`);
- every call is a heartbeat (`beat`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drasill_cli.hooks import events
from drasill_cli.hooks.events import Answer, Event

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh
    from drasill_cli.models import AgentRecord
    from drasill_cli.storage.locktable import LockChanges

# The core modules are imported where they are used: a hook call with nothing to do (no mail,
# no edit) imports none of locks, tasks, messages or onboarding.

MAIL_PER_CALL = 5
OPEN_TASK_STATES = ("claimed", "working")
HOOK_KEY = "hook"  # the mark on a lock record taken by a hook (locks.HOOK_KEY)
REMINDED_KEY = "hook_reminded"  # the agent record's note of the task it was reminded of
HOOK_TASK_KEY = "hook_task"  # the agent record's note of the task its hook locks belong to


def beat(mesh: Mesh, agent: str) -> bool:
    """A heartbeat of `agent`; False when it is not registered (then the hook does nothing)."""
    return mesh.touch_heartbeat(agent)


# ---- session ------------------------------------------------------------------------------


def session_start(mesh: Mesh, agent: str, event: Event, cli_pid: int | None) -> Answer:
    """Register `agent` (or refresh it) as the CLI's process, and give it the mesh prompt.

    A live agent of that name registered by another process (`mesh launch`'s pane, a
    `mesh register --pid`) is refreshed by a heartbeat only: the hook never takes a name over.
    """
    from drasill_cli import agents, onboarding
    from drasill_cli.errors import NegativeOutcome

    record = mesh.backend.presence.get(agent)
    notice = None
    if record is None or record.dead_at is not None or record.pid in (None, cli_pid):
        try:
            agents.register(mesh, agent, pid=cli_pid, tool=event.cli, cwd=event.cwd or os.getcwd())
        except NegativeOutcome as exc:
            notice = f"mesh: {agent} not registered: {exc}"
    else:
        beat(mesh, agent)
    mesh.append_audit_event(
        "hook-session", agent, cli=event.cli, session=event.session_id, pid=cli_pid
    )
    return Answer(context=onboarding.prompt(agent), notice=notice)


def session_end(mesh: Mesh, agent: str, event: Event) -> Answer:
    """Release the locks hooks took for this agent (of this session, when the CLI names it)."""
    release_hook_locks(mesh, agent, session=event.session_id)
    return Answer()


# ---- edits --------------------------------------------------------------------------------


def _absolute(path: str, cwd: str | None) -> str:
    return path if os.path.isabs(path) or not cwd else os.path.join(cwd, path)


def open_task(mesh: Mesh, agent: str) -> dict[str, Any] | None:
    """The task `agent` has claimed and not finished (the oldest, if several)."""
    from drasill_cli import tasks

    for task in tasks.list_tasks(mesh):
        if task.get("claimed_by") == agent and task["state"] in OPEN_TASK_STATES:
            return task
    return None


def before_edit(mesh: Mesh, agent: str, event: Event) -> Answer:
    """Refuse the edit when another agent holds a conflicting lock on one of its paths; else
    take or renew the agent's write lock on each (all or none)."""
    if not event.paths:
        return Answer()
    from drasill_cli import locks
    from drasill_cli.errors import NegativeOutcome

    targets = locks.resolve_all([_absolute(path, event.cwd) for path in event.paths])
    mine = [
        lock for lock in locks.list_locks(mesh) if lock["holder"] == agent and not lock["stale"]
    ]
    covered = {
        target.key: lock["path"]
        for target in targets
        for lock in mine
        if lock["mode"] in ("write", "co_write") and locks.covers(lock["path"], target.key)
    }
    if covered:
        locks.renew(mesh, sorted(set(covered.values())), agent)
    wanted = [target.key for target in targets if target.key not in covered]
    if not wanted:
        return Answer()
    task = open_task(mesh, agent)
    try:
        granted = locks.acquire(mesh, wanted, agent, mode="write")
    except NegativeOutcome as exc:
        return Answer(deny=refusal(wanted, exc.details.get("conflicts") or [], str(exc)))
    # Marked: the locks new to the agent. One it held before on that very path was a read or
    # intent lock it took itself (a hook's lock is a write lock, renewed above): it stays its own.
    before = {lock["path"] for lock in mine}
    marked = [lock["path"] for lock in granted if lock["path"] not in before]
    mark = {"cli": event.cli, "session": event.session_id, "task": task["id"] if task else None}
    _mark(mesh, agent, marked, mark)
    if task is not None and marked:
        _set_note(mesh, agent, HOOK_TASK_KEY, task["id"])
    return Answer()


def refusal(paths: Sequence[str], conflicts: Sequence[dict[str, Any]], fallback: str) -> str:
    """The reason an edit is refused: each holder, its mode and when its lease ends."""
    from drasill_cli import clock, lockpaths

    if not conflicts:
        return f"mesh: edit refused: {fallback}"
    now = clock.now()
    held = []
    for lock in conflicts:
        left = max(0, round(clock.parse_iso(lock["expires_at"]) - now))
        held.append(
            f"{lock['holder']} holds a {lock['mode']} lock on {lockpaths.shown(lock)} "
            f"until {lock['expires_at']} (lease ends in {left}s)"
        )
    shown = ", ".join(lockpaths.shown({"path": path}) for path in paths)
    return (
        f"mesh: edit of {shown} refused: {'; '.join(held)}. Do not edit it now: work on "
        f"something else, ask {conflicts[0]['holder']} (mesh send), or wait for it "
        "(mesh lock PATH --wait SECONDS)."
    )


def _mark(mesh: Mesh, agent: str, paths: Sequence[str], mark: dict[str, Any]) -> None:
    """Mark the agent's locks on `paths` as taken by a hook (`HOOK_KEY`)."""
    if not paths:
        return
    from drasill_cli.storage.locktable import LockChanges

    wanted = set(paths)

    def decide(table: list[dict[str, Any]]) -> LockChanges[None]:
        put = [
            {**lock, HOOK_KEY: mark}
            for lock in table
            if lock["holder"] == agent and lock["path"] in wanted
        ]
        return LockChanges(None, put=put)

    mesh.backend.locks.transact(decide)


def _drop_hook_locks(mesh: Mesh, agent: str, keep: Any) -> list[dict[str, Any]]:
    """Remove the agent's hook-taken locks for which `keep(mark)` is false; returns them."""
    from drasill_cli import locks

    return locks.release_hook_locks(mesh, agent, keep)


def hook_locks(mesh: Mesh, agent: str) -> list[dict[str, Any]]:
    """The locks hooks took for `agent` (as stored)."""
    return [
        lock
        for lock in mesh.backend.locks.all()
        if lock["holder"] == agent and isinstance(lock.get(HOOK_KEY), dict)
    ]


def release_hook_locks(
    mesh: Mesh, agent: str, *, session: str | None = None
) -> list[dict[str, Any]]:
    """Release the locks hooks took for `agent` (only those of `session` when given)."""
    return _drop_hook_locks(
        mesh, agent, lambda mark: session is not None and mark.get("session") not in (None, session)
    )


def _set_note(mesh: Mesh, agent: str, key: str, value: Any, *, only_if: Any = None) -> bool:
    """Set `key` of the agent's record to `value` (None: remove it); with `only_if`, only while
    it still holds that. False when nothing was written."""
    from drasill_cli.models import AgentRecord

    wrote = False

    def decide(record: AgentRecord | None) -> AgentRecord | None:
        nonlocal wrote
        if record is None or record.extra.get(key) == value:
            return None
        if only_if is not None and record.extra.get(key) != only_if:
            return None
        data = {k: v for k, v in record.to_record().items() if k != key}
        if value is not None:
            data[key] = value
        wrote = True
        return AgentRecord.from_record(data)

    mesh.backend.presence.change(agent, decide)
    return wrote


def release_for_ended_tasks(mesh: Mesh, agent: str) -> list[dict[str, Any]]:
    """Release the hook-taken locks of `agent` that belong to a task it no longer has open
    (done, failed, released, or taken from it).

    The agent's record notes the task its hook locks belong to (`HOOK_TASK_KEY`), so a call
    with no such task reads one record and no lock (the lock table's reader loads git and
    process helpers: not for a call with nothing to do)."""
    record = mesh.backend.presence.get(agent)
    task_id = record.extra.get(HOOK_TASK_KEY) if record is not None else None
    if not isinstance(task_id, str):
        return []
    task = mesh.backend.board.get(task_id)
    if task is not None and task.state in OPEN_TASK_STATES and task.claimed_by == agent:
        return []
    gone = _drop_hook_locks(mesh, agent, lambda mark: mark.get("task") != task_id)
    _set_note(mesh, agent, HOOK_TASK_KEY, None, only_if=task_id)
    return gone


# ---- mail and stop ----------------------------------------------------------------------


def _message_line(message: dict[str, Any]) -> str:
    urgent = " (urgent)" if message.get("priority") == "urgent" else ""
    reply = f", reply to {message['reply_to']}" if message.get("reply_to") else ""
    return (
        f"- from {message['from']}{urgent} at {message['created_at']} "
        f"[id {message['id']}{reply}]:\n{message['body']}"
    )


def take_mail(mesh: Mesh, agent: str, limit: int = MAIL_PER_CALL) -> str | None:
    """Up to `limit` unread messages, consumed (urgent first, as `mesh inbox`), as one text
    with a last line saying how many more wait; None when there is none."""
    if not mesh.backend.mailbox.unread_count(agent):  # the common case: nothing parsed
        return None
    from drasill_cli import messages

    taken = []
    for _ in range(limit):
        message = messages.consume(mesh, agent)
        if message is None:
            break
        taken.append(message)
    if not taken:
        return None
    lines = [f"[mesh] {len(taken)} new message(s) for {agent} (now read; reply with mesh send):"]
    lines += [_message_line(message) for message in taken]
    more = messages.unread_count(mesh, agent)
    if more:
        lines.append(f"[mesh] {more} more message(s) wait: run `mesh inbox` for each.")
    return "\n".join(lines)


def after_tool(mesh: Mesh, agent: str, event: Event) -> Answer:
    """After a tool call or on prompt submit: the unread mail, into the context."""
    return Answer(context=take_mail(mesh, agent))


def _remind_once(mesh: Mesh, agent: str, task_id: str) -> bool:
    """Note on the agent's record that it was reminded of `task_id`; False if it already was."""
    return _set_note(mesh, agent, REMINDED_KEY, task_id)


def stop(mesh: Mesh, agent: str, event: Event) -> Answer:
    """Refuse the stop while mail is unread (the mail is the reason), unless the CLI is already
    continuing because of a stop hook; remind once of a claimed task still open."""
    if event.stop_active:
        return Answer()
    mail = take_mail(mesh, agent)
    if mail is not None:
        return Answer(
            context=mail + "\n[mesh] Read and act on this mail before you stop.", block_stop=True
        )
    task = open_task(mesh, agent)
    if task is not None and _remind_once(mesh, agent, task["id"]):
        return Answer(
            context=(
                f"[mesh] your task {task['id']} ({task['title']}) is still {task['state']}: "
                f'finish it with `mesh task done {task["id"]} --result "..."` '
                f"(or `mesh task fail`/`mesh task release {task['id']}`) before you stop."
            ),
            block_stop=True,
        )
    return Answer()


HANDLERS = {
    events.PRE_TOOL: before_edit,
    events.POST_TOOL: after_tool,
    events.PROMPT: after_tool,
    events.STOP: stop,
    events.SESSION_END: session_end,
}
