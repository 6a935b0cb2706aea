"""The lifecycle: agents go active -> idle -> dead -> removed, and prune applies it.

`prune` first computes a plan (`plan`: a list of `Action`s, each in the words `mesh prune`
prints) from what it reads, then applies it (`apply`); a dry run foresees the same plan on a
read-only view (`foresee`) and changes nothing, so the dry run and the real run cannot
disagree about what is due.

`prune` is idempotent and safe to run concurrently (from cron, from `mesh watch`, by hand):
every action re-reads under the record's exclusion (a decision: it only compares) and acts only
if the condition still holds, and what follows (releases, requeues, archives, audit lines)
runs after the commit, each step idempotent, so eight prunes racing end in the same state as
one, and a prune or unregister killed midway is completed by the next. It never deletes mail:
a removed agent's unread messages are archived.

What a name no longer registered still holds (a task claimed before claiming needed a
registered name, or one whose claim escaped its retirement's cut) is freed too
(`FreeUnregistered`): nobody watches such a claimant, so otherwise it would hold it forever.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, Protocol

from drasill_cli import clock
from drasill_cli.mesh import Mesh
from drasill_cli.models import AgentRecord, Task
from drasill_cli.presence import Observer, records
from drasill_cli.storage.presence import REMOVE, Decision

Report = dict[str, Any]


def _empty_report(*, dry_run: bool = False) -> Report:
    return {
        "dry_run": dry_run,
        "marked_dead": [],
        "removed": [],
        "archived_messages": {},
        "locks_released": [],
        "tasks_requeued": [],
        "tasks_abandoned": [],
        "budgets_released": [],
        "temp_files_removed": [],
        "history_expired": [],
        "attachments_removed": [],
    }


def report_is_empty(report: Report) -> bool:
    """True when prune changed (or, dry, would change) nothing: cron runs stay quiet."""
    return not any(value for key, value in report.items() if key != "dry_run")


# ---- freeing and removing one agent (prune and `mesh unregister`) ------------------------------


def release_agent(
    mesh: Mesh, name: str, report: Report, *, died: bool = True, until: float | None = None
) -> None:
    """Free what a dead or departing agent held: its locks and its claimed tasks (with
    `until`, only those it took by then). Each is its own exclusion; run it holding none.

    `died=False` (unregister): its tasks are requeued without counting a failed attempt.
    """
    from drasill_cli import locks, tasks

    report["locks_released"].extend(locks.release_all(mesh, name, until=until))
    for task in tasks.requeue_tasks_of(mesh, name, died=died, until=until):
        key = "tasks_abandoned" if task["state"] == "abandoned" else "tasks_requeued"
        report[key].append(task)


def retire_agent(
    mesh: Mesh, name: str, *, event: str, actor: str | None, only_if_dead: bool = False
) -> Report:
    """Remove an agent for good: release its holdings, archive its unread mail, drop it.

    Used by `unregister` (event "unregister") and by prune after `remove_after`
    (event "agent-removed", `only_if_dead`). In steps, each its own exclusion or none, each
    idempotent (an exclusion only decides: `storage.exclusion`):

    1. under the agent's exclusion, it is marked dead (if it is not yet), and the moment is
       the cut: whatever it took by then is its predecessor's;
    2. after that commit, its locks and claimed tasks taken by the cut are freed and its unread
       mail is archived;
    3. under its exclusion again, the record is removed if it is still the one marked;
    4. mail delivered meanwhile is archived, unless the name was registered again.

    A process that registers the name after step 1 keeps the locks and tasks it takes (taken
    after the cut), and its record is never removed (step 3 finds another record). A process
    killed between steps leaves a dead agent: the next `mesh unregister` or prune completes it.
    """
    from drasill_cli import messages

    report = _empty_report()
    marked: list[tuple[AgentRecord, float]] = []

    def mark(agent: AgentRecord | None) -> Decision:
        if agent is None or (only_if_dead and agent.dead_at is None):
            return None
        now = clock.now()
        marked.append((agent, now))
        if agent.dead_at is not None:
            return None
        agent.dead_at = clock.iso(now)
        return agent

    mesh.backend.presence.change(name, mark)
    if not marked:
        return report
    agent, cut = marked[0]
    release_agent(mesh, name, report, died=event != "unregister", until=cut)
    archived = messages.archive_inbox(mesh, name)

    removed: list[bool] = []

    def remove(current: AgentRecord | None) -> Decision:
        same = current is not None and (current.registered_at, current.dead_at) == (
            agent.registered_at,
            agent.dead_at,
        )
        if not same:
            return None  # gone (another retirer), or registered again since the mark
        removed.append(True)
        return REMOVE

    mesh.backend.presence.change(name, remove)
    if removed:
        report["removed"].append(name)
        archived += _archive_late_mail(mesh, name)
        if archived:
            report["archived_messages"][name] = archived
        mesh.append_audit_event(event, actor, agent=name, archived=archived)
    elif archived:
        report["archived_messages"][name] = archived
    return report


def _archive_late_mail(mesh: Mesh, name: str) -> int:
    """Archive mail delivered while the agent was being removed, unless the name was taken
    again: how many.

    A sender that found the agent registered can land its message after the removal's archive
    pass (on a directory mesh nothing holds the recipient while a send is under way); a sender
    landing after this pass finds the agent gone and archives the message itself.
    """
    from drasill_cli import messages

    if mesh.is_registered(name):
        return 0
    return messages.archive_inbox(mesh, name)


def _release_if_still_dead(mesh: Mesh, name: str, report: Report) -> None:
    """Free a dead agent's holdings if it is still dead, and only what it took before that
    look: a process that registered the name again since prune looked keeps what it took."""
    cut = clock.now()
    agent = mesh.backend.presence.get(name)
    if agent is not None and agent.dead_at is not None:
        release_agent(mesh, name, report, until=cut)


def _save_reset_death(mesh: Mesh, name: str) -> None:
    """A time of death from the future was read as now: store it so, so it ages from here."""

    def decide(agent: AgentRecord | None) -> Decision:
        return agent if agent is not None and "dead_at" in agent.clock_reset else None

    mesh.backend.presence.change(name, decide)


def _mark_dead(mesh: Mesh, observer: Observer, name: str) -> AgentRecord | None:
    """Set `dead_at` on an agent found dead (re-checked under its exclusion); returns the
    updated record, or None when it is gone, already marked, or no longer dead."""
    marked: list[AgentRecord] = []
    beat = mesh.backend.presence.last_seen(name)  # looked up before: a decision only compares

    def decide(agent: AgentRecord | None) -> Decision:
        if agent is None or agent.dead_at is not None:
            return None
        if observer.state(agent, seen=observer.seen(agent, beat)) != "dead":
            return None
        agent.dead_at = clock.iso()
        marked.append(agent)
        return agent

    mesh.backend.presence.change(name, decide)
    if not marked:
        return None
    agent = marked[0]
    mesh.append_audit_event("agent-dead", "prune", agent=name, pid=agent.pid, session=agent.session)
    from drasill_cli import messages

    # After the commit, by the one pass that marked it: each sender hears once.
    messages.bounce_unread(mesh, name)
    if agent.ram_gb or agent.vram_gb:
        mesh.append_audit_event(
            "budget-released", "prune", agent=name, ram_gb=agent.ram_gb, vram_gb=agent.vram_gb
        )
    return agent


# ---- the plan --------------------------------------------------------------------------------


@dataclasses.dataclass
class Pass:
    """One prune pass: the mesh it acts on (a read-only view for a dry run), one Observer (tmux
    is listed once), and for foresight the locks and tasks as they stand, read once."""

    mesh: Mesh
    observer: Observer

    @cached_property
    def locks(self) -> list[dict[str, Any]]:
        from drasill_cli import locks

        return locks.list_locks(self.mesh)

    @cached_property
    def tasks(self) -> list[dict[str, Any]]:
        from drasill_cli import tasks

        return tasks.list_tasks(self.mesh)


class Action(Protocol):
    """One step of a prune. `foresee` adds to the report what the step would do (a dry run,
    on a read-only view); `apply` does it, re-checking under the record's exclusion, and adds
    what it did. The report's keys are the words `mesh prune` prints."""

    def foresee(self, run: Pass, report: Report) -> None: ...

    def apply(self, run: Pass, report: Report) -> None: ...


def _foresee_release(run: Pass, name: str, report: Report) -> None:
    """The locks and claimed tasks `release_agent` would free for `name` (died: a task's fate
    is the one `tasks.after_claimant_left` gives it)."""
    from drasill_cli import tasks

    report["locks_released"].extend(lock for lock in run.locks if lock["holder"] == name)
    max_attempts = run.mesh.config.lifecycle.max_attempts
    for task in run.tasks:
        if task["claimed_by"] == name and task["state"] in ("claimed", "working"):
            after = tasks.after_claimant_left(
                Task.from_record(task), died=True, max_attempts=max_attempts
            )
            report["tasks_abandoned" if after.state == "abandoned" else "tasks_requeued"].append(
                task
            )


@dataclasses.dataclass(frozen=True)
class MarkDead:
    """Record the death of an agent found dead (its budget is released with it)."""

    agent: AgentRecord

    def _count(self, report: Report) -> None:
        report["marked_dead"].append(self.agent.name)
        if self.agent.ram_gb or self.agent.vram_gb:
            report["budgets_released"].append(self.agent.name)

    def foresee(self, run: Pass, report: Report) -> None:
        self._count(report)

    def apply(self, run: Pass, report: Report) -> None:
        if _mark_dead(run.mesh, run.observer, self.agent.name) is not None:
            self._count(report)


@dataclasses.dataclass(frozen=True)
class KeepResetDeath:
    """Store a time of death from the future as now (nothing to report)."""

    name: str

    def foresee(self, run: Pass, report: Report) -> None:
        pass

    def apply(self, run: Pass, report: Report) -> None:
        _save_reset_death(run.mesh, self.name)


@dataclasses.dataclass(frozen=True)
class Remove:
    """Remove an agent dead for `remove_after`: free its holdings, archive its unread mail."""

    name: str

    def foresee(self, run: Pass, report: Report) -> None:
        from drasill_cli import messages

        report["removed"].append(self.name)
        unread = messages.unread_count(run.mesh, self.name)
        if unread:
            report["archived_messages"][self.name] = unread
        _foresee_release(run, self.name, report)

    def apply(self, run: Pass, report: Report) -> None:
        removal = retire_agent(
            run.mesh, self.name, event="agent-removed", actor="prune", only_if_dead=True
        )
        _merge(report, removal)


@dataclasses.dataclass(frozen=True)
class Release:
    """Free the locks and tasks of an agent that is dead but not yet due for removal."""

    name: str

    def foresee(self, run: Pass, report: Report) -> None:
        _foresee_release(run, self.name, report)

    def apply(self, run: Pass, report: Report) -> None:
        _release_if_still_dead(run.mesh, self.name, report)


# What prune leaves to the next prune: a claim or lock stamped less than this before its look
# at the registered names may have been taken after the look, on a host whose clock runs behind
# (the hosts of a database mesh read the server's clock, each to within FOLLOW_TOLERANCE_S).
CLOCK_MARGIN_S = 2 * clock.FOLLOW_TOLERANCE_S


def look_up_registered(mesh: Mesh) -> tuple[frozenset[str], float]:
    """The names registered now, and a moment before this look (less `CLOCK_MARGIN_S`): what
    a name missing from the look held by that moment was taken before it could register again,
    so it is its predecessor's."""
    until = clock.now() - CLOCK_MARGIN_S
    return frozenset(mesh.agent_names()), until


@dataclasses.dataclass(frozen=True)
class FreeUnregistered:
    """Requeue the tasks and drop the locks still held by names that are not registered (taken
    before claiming and locking needed a registered name, or escaped a retirement's cut): a
    claimant nobody watches would keep them forever. As for an unregistered claimant: back to
    queued, attempts unchanged. The names are looked up first; each decision only compares."""

    def foresee(self, run: Pass, report: Report) -> None:
        from drasill_cli import locks, tasks

        registered, until = look_up_registered(run.mesh)
        report["locks_released"].extend(locks.unregistered_locks(run.mesh, registered, until=until))
        report["tasks_requeued"].extend(
            task
            for task in run.tasks
            if tasks.held_unregistered(Task.from_record(task), registered, until)
        )

    def apply(self, run: Pass, report: Report) -> None:
        from drasill_cli import locks, tasks

        registered, until = look_up_registered(run.mesh)
        report["locks_released"].extend(
            locks.release_unregistered(run.mesh, registered, until=until)
        )
        report["tasks_requeued"].extend(
            tasks.requeue_unregistered(run.mesh, registered, until=until)
        )


@dataclasses.dataclass(frozen=True)
class ClearStaleLocks:
    """Drop locks whose lease ran out or whose holder is dead."""

    def foresee(self, run: Pass, report: Report) -> None:
        freed = {(lock["path"], lock["holder"]) for lock in report["locks_released"]}
        report["locks_released"].extend(
            lock
            for lock in run.locks
            if lock["stale"] and (lock["path"], lock["holder"]) not in freed
        )

    def apply(self, run: Pass, report: Report) -> None:
        from drasill_cli import locks

        report["locks_released"].extend(locks.clear_stale(run.mesh))


@dataclasses.dataclass(frozen=True)
class SweepTemp:
    """Remove temp files of killed writers, last changed before `older_than`."""

    older_than: float

    def foresee(self, run: Pass, report: Report) -> None:
        sweep = run.mesh.backend.maintenance.sweep
        report["temp_files_removed"] = sweep(self.older_than, apply=False)

    def apply(self, run: Pass, report: Report) -> None:
        report["temp_files_removed"] = run.mesh.backend.maintenance.sweep(self.older_than)


@dataclasses.dataclass(frozen=True)
class ExpireHistory:
    """Delete sent and read messages created before `cutoff` (`messages.history_days`); unread
    mail is never touched."""

    cutoff: float

    def foresee(self, run: Pass, report: Report) -> None:
        from drasill_cli import messages

        report["history_expired"] = messages.expired_history(run.mesh, self.cutoff)

    def apply(self, run: Pass, report: Report) -> None:
        from drasill_cli import messages

        report["history_expired"] = messages.expire_history(run.mesh, self.cutoff)


@dataclasses.dataclass(frozen=True)
class RemoveOrphanAttachments:
    """Remove attachment folders no message refers to (left by killed senders), older than
    `older_than`."""

    older_than: float

    def foresee(self, run: Pass, report: Report) -> None:
        from drasill_cli import messages

        report["attachments_removed"] = messages.orphan_attachments(run.mesh, self.older_than)

    def apply(self, run: Pass, report: Report) -> None:
        from drasill_cli import messages

        report["attachments_removed"] = [
            msg_id
            for msg_id in messages.orphan_attachments(run.mesh, self.older_than)
            if messages.remove_attachment_folder(run.mesh, msg_id)
        ]


def plan(run: Pass) -> list[Action]:
    """What the lifecycle asks for now, read from the mesh: deaths to record, dead agents to
    free or remove, what names no longer registered hold, then stale locks, temp files, old
    history and orphan attachments."""
    now = clock.now()
    lifecycle = run.mesh.config.lifecycle
    actions: list[Action] = []
    for agent in records(run.mesh):
        if agent.dead_at is None:
            if run.observer.state(agent) != "dead":
                continue
            actions.append(MarkDead(agent))
            dead_since = now
        else:
            if "dead_at" in agent.clock_reset:
                actions.append(KeepResetDeath(agent.name))
            dead_since = clock.parse_iso(agent.dead_at)
        due = now - dead_since >= lifecycle.remove_after
        actions.append(Remove(agent.name) if due else Release(agent.name))
    actions.append(FreeUnregistered())
    actions.append(ClearStaleLocks())
    actions.append(SweepTemp(now - lifecycle.stale_tmp_after))
    days = run.mesh.config.messages.history_days
    if days > 0:  # 0 keeps history forever
        actions.append(ExpireHistory(now - days * 86400))
    actions.append(RemoveOrphanAttachments(now - lifecycle.stale_tmp_after))
    return actions


def foresee(run: Pass, actions: list[Action]) -> Report:
    """The report of `actions` without doing them (a dry run)."""
    report = _empty_report(dry_run=True)
    for action in actions:
        action.foresee(run, report)
    return report


def apply(run: Pass, actions: list[Action]) -> Report:
    """Do `actions` in order; the report of what they did (recorded in the audit log)."""
    report = _empty_report()
    for action in actions:
        action.apply(run, report)
    if not report_is_empty(report):
        counts = {key: _count(value) for key, value in report.items() if key != "dry_run"}
        run.mesh.append_audit_event("prune", "prune", **counts)
    return report


def prune(mesh: Mesh, *, dry_run: bool = False) -> Report:
    """Apply the lifecycle now; with `dry_run`, report what would happen and change nothing."""
    view = mesh.read_only() if dry_run else mesh
    run = Pass(view, Observer(view))
    actions = plan(run)
    return foresee(run, actions) if dry_run else apply(run, actions)


def _merge(into: Report, other: Report) -> None:
    for key, value in other.items():
        if isinstance(value, list):
            into[key].extend(value)
        elif isinstance(value, dict):
            into[key].update(value)


def _count(value: Any) -> Any:
    return len(value) if isinstance(value, list | dict) else value
