"""The lifecycle: agents go active -> idle -> dead -> removed, and prune applies it.

`prune` is idempotent and safe to run concurrently (from cron, from `mesh watch`, by hand):
every step re-reads under the record's lock and acts only if the condition still holds, so
eight prunes racing end in the same state as one. It never deletes mail: a removed agent's
unread messages are archived under `archive/`.
"""

from __future__ import annotations

from typing import Any

from drasill_cli import clock
from drasill_cli.agents import Observer, load
from drasill_cli.mesh import Mesh, agent_record_path, heartbeat_path
from drasill_cli.models import AgentRecord


def _empty_report() -> dict[str, Any]:
    return {
        "dry_run": False,
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


def report_is_empty(report: dict[str, Any]) -> bool:
    """True when prune changed (or, dry, would change) nothing: cron runs stay quiet."""
    return not any(value for key, value in report.items() if key != "dry_run")


def release_agent(mesh: Mesh, name: str, report: dict[str, Any], *, died: bool = True) -> None:
    """Free what a dead or departing agent held: its locks and its claimed tasks.

    `died=False` (unregister): its tasks are requeued without counting a failed attempt.
    """
    from drasill_cli import locks, tasks

    report["locks_released"].extend(locks.release_all(mesh, name))
    for task in tasks.requeue_tasks_of(mesh, name, died=died):
        key = "tasks_abandoned" if task["state"] == "abandoned" else "tasks_requeued"
        report[key].append(task)


def retire_agent(
    mesh: Mesh, name: str, *, event: str, actor: str | None, only_if_dead: bool = False
) -> dict[str, Any]:
    """Remove an agent for good: release its holdings, archive its unread mail, drop it.

    Used by `unregister` (event "unregister") and by prune after `remove_after`
    (event "agent-removed", `only_if_dead`). Everything happens under the agent's lock, so a
    new process registering the name meanwhile never loses its fresh locks or tasks.
    """
    from drasill_cli import messages

    report = _empty_report()
    with mesh.store.lock(f"agent-{name}"):
        agent = load(mesh, name)
        if agent is None or (only_if_dead and agent.dead_at is None):
            return report
        release_agent(mesh, name, report, died=event != "unregister")
        archived = messages.archive_inbox(mesh, name)
        if archived:
            report["archived_messages"][name] = archived
        mesh.store.remove(agent_record_path(name))
        mesh.store.remove(heartbeat_path(name))
    report["removed"].append(name)
    mesh.record(event, actor, agent=name, archived=archived)
    return report


def _release_if_still_dead(mesh: Mesh, name: str, report: dict[str, Any]) -> None:
    """Free a dead agent's holdings, re-checked under its lock: a process that registered the
    name again since prune looked must keep the locks and tasks it took."""
    with mesh.store.lock(f"agent-{name}"):
        agent = load(mesh, name)
        if agent is not None and agent.dead_at is not None:
            release_agent(mesh, name, report)


def _save_reset_death(mesh: Mesh, name: str) -> None:
    """A time of death from the future was read as now: store it so, so it ages from here."""
    with mesh.store.lock(f"agent-{name}"):
        agent = load(mesh, name)
        if agent is not None and "dead_at" in agent.clock_reset:
            mesh.store.write(agent_record_path(name), agent.to_record())


def _mark_dead(mesh: Mesh, observer: Observer, name: str) -> AgentRecord | None:
    """Set `dead_at` on an agent found dead; returns the updated record, or None."""
    with mesh.store.lock(f"agent-{name}"):
        agent = load(mesh, name)
        if agent is None or agent.dead_at is not None or observer.state(agent) != "dead":
            return None
        agent.dead_at = clock.iso()
        mesh.store.write(agent_record_path(name), agent.to_record())
    mesh.record("agent-dead", "prune", agent=name, pid=agent.pid, session=agent.session)
    if agent.ram_gb or agent.vram_gb:
        mesh.record(
            "budget-released", "prune", agent=name, ram_gb=agent.ram_gb, vram_gb=agent.vram_gb
        )
    return agent


def prune(mesh: Mesh, *, dry_run: bool = False) -> dict[str, Any]:
    """Apply the lifecycle now; with `dry_run`, report what would happen and change nothing."""
    if dry_run:
        return _plan(mesh.read_only())
    report = _empty_report()
    observer = Observer(mesh)
    now = clock.now()
    remove_after = mesh.config.lifecycle.remove_after
    for name in mesh.agent_names():
        agent = load(mesh, name)
        if agent is None:
            continue
        marked = _mark_dead(mesh, observer, name)
        if marked is not None:
            agent = marked
            report["marked_dead"].append(name)
            if agent.ram_gb or agent.vram_gb:
                report["budgets_released"].append(name)
        if agent.dead_at is None:
            continue
        if "dead_at" in agent.clock_reset:
            _save_reset_death(mesh, name)
        if clock.now() - clock.parse_iso(agent.dead_at) >= remove_after:
            removal = retire_agent(
                mesh, name, event="agent-removed", actor="prune", only_if_dead=True
            )
            _merge(report, removal)
        else:
            _release_if_still_dead(mesh, name, report)
    from drasill_cli import locks

    report["locks_released"].extend(locks.clear_stale(mesh))
    report["temp_files_removed"] = _sweep_temp(mesh, now)
    _tidy_mail(mesh, now, report)
    if not report_is_empty(report):
        mesh.record("prune", "prune", **{k: _count(v) for k, v in report.items() if k != "dry_run"})
    return report


def _plan(view: Mesh) -> dict[str, Any]:
    """What prune would do, computed from a read-only view of the mesh."""
    from drasill_cli import locks, messages, tasks

    report = _empty_report()
    report["dry_run"] = True
    observer = Observer(view)
    now = clock.now()
    remove_after = view.config.lifecycle.remove_after
    departing: list[str] = []
    for name in view.agent_names():
        agent = load(view, name)
        if agent is None:
            continue
        if agent.dead_at is None and observer.state(agent) == "dead":
            report["marked_dead"].append(name)
            if agent.ram_gb or agent.vram_gb:
                report["budgets_released"].append(name)
            dead_since = now
        elif agent.dead_at is not None:
            dead_since = clock.parse_iso(agent.dead_at)
        else:
            continue
        departing.append(name)
        if now - dead_since >= remove_after:
            report["removed"].append(name)
            unread = messages.unread_count(view, name)
            if unread:
                report["archived_messages"][name] = unread
    report["locks_released"] = [
        lock for lock in locks.list_locks(view) if lock["holder"] in departing or lock["stale"]
    ]
    max_attempts = view.config.lifecycle.max_attempts
    for task in tasks.list_tasks(view):
        if task["claimed_by"] in departing and task["state"] in ("claimed", "working"):
            abandoned = task["attempts"] + 1 >= max_attempts
            report["tasks_abandoned" if abandoned else "tasks_requeued"].append(task)
    report["temp_files_removed"] = _sweep_temp(view, now, remove=False)
    _tidy_mail(view, now, report, dry_run=True)
    return report


def _sweep_temp(mesh: Mesh, now: float, *, remove: bool = True) -> list[str]:
    """The store's temp files left by killed writers, older than `stale_tmp_after`."""
    return mesh.store.sweep_temp(now - mesh.config.lifecycle.stale_tmp_after, remove=remove)


def _tidy_mail(mesh: Mesh, now: float, report: dict[str, Any], *, dry_run: bool = False) -> None:
    """Drop history past `messages.history_days` (0 keeps it forever) and attachment folders
    that no message refers to (left by killed senders). Unread mail is never touched."""
    from drasill_cli import messages

    days = mesh.config.messages.history_days
    if days > 0:
        cutoff = now - days * 86400
        if dry_run:
            report["history_expired"] = messages.expired_history(mesh, cutoff)
        else:
            report["history_expired"] = messages.expire_history(mesh, cutoff)
    orphans = messages.orphan_attachments(mesh, now - mesh.config.lifecycle.stale_tmp_after)
    if dry_run:
        report["attachments_removed"] = orphans
    else:
        report["attachments_removed"] = [
            msg_id for msg_id in orphans if messages.remove_attachment_folder(mesh, msg_id)
        ]


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, list):
            into[key].extend(value)
        elif isinstance(value, dict):
            into[key].update(value)


def _count(value: Any) -> Any:
    return len(value) if isinstance(value, list | dict) else value
