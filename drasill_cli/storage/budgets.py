"""`BudgetBook`: hardware enforcement's book: which agents are warned or paused, and since when.

Budget enforcement (`drasill_cli.hardware_enforcement`) measures each agent and warns, pauses
(SIGSTOP) or kills one that uses more than it declared. The book remembers what must outlive one
pass: the processes a pause stopped (so a later pass resumes exactly those) and the overrun an
agent was last warned about (so the same overrun is not warned twice). It also holds the two
exclusions of the budget rules: admission (a declaration is checked against the others and
written before the next is checked) and enforcement (one pass at a time).

Each exclusion is held for the whole `with` block, across every call made inside it, and
excludes the same exclusion taken by any other process (for enforcement: on the same host); how
it is made is the backend's.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Protocol

from drasill_cli.models import RecordError

# A stopped process, as a pause remembers it: its pid and its start time (epoch seconds), so a
# recycled pid is never resumed.
Stopped = tuple[int, float]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_pause(raw: Any) -> list[Stopped]:
    """The processes a stored pause stopped, or RecordError (the record is then quarantined)."""
    pids = raw.get("pids") if isinstance(raw, dict) else None
    if not isinstance(pids, list):
        raise RecordError("is not a pause record (no list of stopped processes)")
    stopped = []
    for item in pids:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], int)
            or isinstance(item[0], bool)
            or item[0] <= 0
            or not _is_number(item[1])
        ):
            raise RecordError(f"holds {item!r}, not a [pid, start time] pair")
        stopped.append((item[0], float(item[1])))
    return stopped


def check_warning(raw: Any) -> dict[str, float]:
    """The overrun a stored warning was about (resource -> declared GiB), or RecordError."""
    over = raw.get("over") if isinstance(raw, dict) else None
    if not isinstance(over, dict) or not all(
        isinstance(k, str) and _is_number(v) for k, v in over.items()
    ):
        raise RecordError("is not a budget warning record (no resource -> GiB map)")
    return {k: float(v) for k, v in over.items()}


class BudgetBook(Protocol):
    """Hardware enforcement's book: which agents are warned or paused, and since when."""

    def admitting(self) -> contextlib.AbstractContextManager[None]:
        """Held while one declaration is checked and written: no other admission runs then.

        Taken before the agent's exclusion (`Presence.change`), never inside it (a decision
        reaches no storage: `storage.exclusion`), and never held while waiting for room."""
        ...

    def enforcing(self) -> contextlib.AbstractContextManager[None]:
        """Held for one enforcement pass: no other pass runs then."""
        ...

    def paused(self, *, own: bool = False) -> list[str]:
        """The names of the paused agents, sorted; with `own`, only those whose pause is
        proven to be this watcher's (as `resume` proves it): what enforcement acts on."""
        ...

    def pause(self, name: str, stopped: list[Stopped], over: list[dict[str, Any]]) -> None:
        """Remember that `name` is paused, which processes were stopped and what it overran."""
        ...

    def resume(self, name: str) -> list[Stopped]:
        """Forget `name`'s pause; returns the processes it stopped (none if it was not paused,
        or its pause record was damaged: quarantined, never returned). Only a pause proven to
        be this watcher's own returns its processes (a directory mesh: the record's file is
        this user's, and no one else could write into it; a database: written by this host
        with this role, by the server's `current_user`); any other is forgotten, resuming
        nothing."""
        ...

    def warned(self, name: str) -> dict[str, float] | None:
        """The overrun `name` was last warned about (resource -> declared GiB), or None."""
        ...

    def warn(self, name: str, over: dict[str, float]) -> None:
        """Remember that `name` was warned about this overrun now."""
        ...

    def forget_warning(self, name: str) -> None:
        """Forget `name`'s warning (it is back under its declaration); no warning: nothing."""
        ...
