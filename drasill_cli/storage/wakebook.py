"""`WakeBook`: `mesh watch`'s bookkeeping: one watcher per mesh (per host), per-agent wake state.

Wake state is a dict per agent (see `drasill_cli.watcher` for its keys), kept apart from the
mail it is about; only the one watcher writes it. A stored state that cannot be read is
quarantined by the backend (reported in `Backend.warnings`) and reads as None, so the watch
goes on. The backend owns the exclusion: one watcher per mesh, or per host where the mesh spans
hosts (a watcher types into the sessions of its own host only); a holder that dies frees it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from drasill_cli.errors import NegativeOutcome


class AlreadyWatching(NegativeOutcome):
    """Another watcher holds the guard; `holder` is what it recorded (pid, host, started_at),
    empty when that could not be read."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(
            "another mesh watch is already running", code="watch-running", holder=holder
        )
        self.holder = holder


class WatchGuard(Protocol):
    """What `WakeBook.watching` yields: the watcher's hold on its guard."""

    def confirm(self) -> None:
        """Make sure this process still is the watcher. A guard that can be lost (a database
        session cut by a restart) is taken again; `AlreadyWatching` when another watcher took
        it meanwhile (this one must stop); `MeshUnusable` when the mesh cannot be reached now
        (try again later)."""
        ...


class WakeBook(Protocol):
    def load(self, agent: str) -> dict[str, Any] | None:
        """`agent`'s wake state, or None when none is kept (or the stored one was damaged)."""
        ...

    def save(self, agent: str, state: dict[str, Any]) -> None:
        """Replace `agent`'s wake state whole."""
        ...

    def forget(self, agent: str) -> None:
        """Drop `agent`'s wake state (none kept is fine)."""
        ...

    def agents(self) -> list[str]:
        """Names that have wake state, sorted."""
        ...

    def watching(self, host: str, holder: dict[str, Any]) -> AbstractContextManager[WatchGuard]:
        """Be the one watcher for `host` for the block, recording `holder` (pid, host,
        started_at) for those refused; `AlreadyWatching` at once when another holds it. The
        guard dies with its process: a killed watcher never blocks the next one. The watcher
        calls `confirm` on what it yields now and then."""
        ...
