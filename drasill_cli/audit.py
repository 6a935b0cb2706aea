"""The audit log's read side: every state change as one event, oldest first, or followed live.

Events are written by `Mesh.append_audit_event` (the one writer) into `mesh.backend.audit_log`;
this module never imports `mesh` at run time, so the log can be read from anywhere without an
import cycle.
How events are kept, rotated and parsed is the backend's (`drasill_cli.storage.auditlog`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

    from drasill_cli.mesh import Mesh


def check_filters(agent: str | None = None, kind: str | None = None) -> None:
    """Refuse (InvalidInput, exit 2) a filter that could match no event: an invalid agent
    name, or an event kind that is not one word."""
    from drasill_cli.errors import InvalidInput
    from drasill_cli.names import check_agent_name

    if agent is not None:
        check_agent_name(agent)
    if kind is not None and (not kind or not all(c.isalnum() or c in "-_" for c in kind)):
        raise InvalidInput(
            f"invalid event kind {kind!r}: give one word such as task-claim or lock "
            "(the second column of `mesh log`)",
            code="invalid-kind",
        )


def matching(
    events: Iterator[dict[str, Any]],
    *,
    agent: str | None = None,
    kind: str | None = None,
    task: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The events done by `agent`, of `kind` and about `task` (each filter only when given)."""
    for event in events:
        if agent is not None and event.get("actor") != agent:
            continue
        if kind is not None and event.get("event") != kind:
            continue
        if task is not None and event.get("task") != task:
            continue
        yield event


def read_events(
    mesh: Mesh,
    since: float | None = None,
    *,
    agent: str | None = None,
    kind: str | None = None,
    task: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Every readable event, oldest first, optionally only those at or after `since`, done by
    `agent`, of `kind`, about `task`."""
    return matching(mesh.backend.audit_log.read(since), agent=agent, kind=kind, task=task)


def latest(mesh: Mesh, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` events, newest first (from the log's end only)."""
    return mesh.backend.audit_log.latest(limit)


def follow(
    mesh: Mesh,
    since: float | None = None,
    stop: threading.Event | None = None,
    *,
    agent: str | None = None,
    kind: str | None = None,
    task: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Every event from `since` on, then new ones as they are appended, until `stop` is set
    (never, without one); woken by the backend's notifications, not a sleep loop. Filtered
    as `read_events`."""
    return matching(mesh.backend.audit_log.follow(since, stop), agent=agent, kind=kind, task=task)
