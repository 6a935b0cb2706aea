"""`AuditLog`: the audit trail: append one event, read since a time, the latest, follow.

An event is a dict with at least `time` (the ISO string of `clock.iso`), `event` (its kind)
and `actor` (a name, or None), plus the event's own details; every value is JSON. The log is
append-only and ordered by appending; readers never see a half-written event. The backend owns
how events are kept (the directory mesh: JSON lines in rotated files; a database: rows) and
drops the oldest past its configured bound (`audit.max_bytes`, `audit.keep`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from drasill_cli import clock
from drasill_cli.errors import MeshError

if TYPE_CHECKING:
    import threading


def event(kind: str, actor: str | None, **details: Any) -> dict[str, Any]:
    """An event as the log keeps it: the time now, its kind, its actor and its details."""
    return {"time": clock.iso(), "event": kind, "actor": actor, **details}


def append_or_warn(log: AuditLog, warnings: list[str], line: dict[str, Any]) -> None:
    """Append `line` to `log`; a failure becomes a warning in `warnings`, not an error.

    The change an event describes has already happened, so a failing audit write is reported
    (see `mesh doctor`) instead of failing the command after the fact.
    """
    try:
        log.append(line)
    except MeshError as exc:
        warnings.append(f"could not append to the audit log: {exc}; run mesh doctor")


class AuditLog(Protocol):
    def append(self, event: dict[str, Any]) -> None:
        """Add `event` at the end; durable and whole once this returns, and appends from any
        number of processes never interleave or lose one another."""
        ...

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every event kept, oldest first; with `since` (epoch seconds), only those whose time
        is at or after it. An unreadable stored event is skipped, never fatal."""
        ...

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` events, newest first, cheaply (never reading the whole log)."""
        ...

    def follow(
        self, since: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """`read(since)`, then each new event as it is appended (woken by the backend's own
        notification, never a sleep loop) until `stop` is set (never, without one). Ctrl-C
        while waiting raises KeyboardInterrupt."""
        ...
