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


def read_events(mesh: Mesh, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every readable event, oldest first, optionally only those at or after `since`."""
    return mesh.backend.audit_log.read(since)


def latest(mesh: Mesh, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` events, newest first (from the log's end only)."""
    return mesh.backend.audit_log.latest(limit)


def follow(
    mesh: Mesh, since: float | None = None, stop: threading.Event | None = None
) -> Iterator[dict[str, Any]]:
    """Every event from `since` on, then new ones as they are appended, until `stop` is set
    (never, without one); woken by the backend's notifications, not a sleep loop."""
    return mesh.backend.audit_log.follow(since, stop)
