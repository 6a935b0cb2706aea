"""`Presence`: who is registered (agent records) and when each last showed a sign of life.

An agent's record (`models.AgentRecord`) holds what it declared at registration; its heartbeat
is a separate time, refreshed by any command run as it, so a heartbeat never rewrites the
record. The feature modules own the rules (names, who may take a name over, when an agent is
dead: `drasill_cli.presence` and `drasill_cli.agents`); a backend only keeps records and
heartbeats and runs a decision under the agent's exclusion.

A decision (`change`) runs under the agent's exclusion, which also covers a name with no
record yet, and is stored whole; a heartbeat never waits on it. How records, heartbeats and the
exclusion are kept is the backend's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

if TYPE_CHECKING:
    from drasill_cli.models import AgentRecord


class Removal(enum.Enum):
    """The decision to remove an agent (its record and its heartbeat)."""

    REMOVE = "remove"


REMOVE = Removal.REMOVE

# What a `Presence.change` decision returns: the record to store, None to store nothing, or
# REMOVE to drop the agent.
Decision: TypeAlias = "AgentRecord | Literal[Removal.REMOVE] | None"


class Presence(Protocol):
    def get(self, name: str) -> AgentRecord | None:
        """The agent's record (validated, and holding this very name), or None when `name` is
        not registered. A stored record that fails validation is quarantined, never returned.
        Its `writer` says who wrote it, as the storage proves it (never as the record says):
        the OS uid where the storage proves one (a directory mesh: the owner of the record's
        file, written so that only its owner can write into it; None when others could have),
        else the database role recorded by the server. Whoever rewrites a record becomes its
        writer: the proof follows the last write, never the record's `uid`."""
        ...

    def names(self) -> list[str]:
        """Every registered agent's name, sorted (cheap: no record is parsed). A stored entry
        whose name is not a valid agent name is not an agent (left for `mesh doctor`)."""
        ...

    def is_registered(self, name: str) -> bool:
        """Whether `name` has a record (cheap: no parse; the hot paths ask it)."""
        ...

    def change(
        self, name: str, decide: Callable[[AgentRecord | None], Decision], *, beat: bool = False
    ) -> AgentRecord | None:
        """Decide and write under the agent's exclusion (no other `change` of `name` runs
        meanwhile, in any process): `decide` gets the current record (None when there is none)
        and returns the record to store, None to store nothing, or REMOVE. With `beat`, storing
        a record is also a heartbeat (registering is a sign of life). Returns the record stored
        after the decision (None when there is none). An exception from `decide` passes through
        and nothing is written. `decide` only decides: it reaches no interface (refused:
        `storage.exclusion`) and never waits."""
        ...

    def remove(self, name: str) -> bool:
        """Drop the agent's record and heartbeat under its exclusion; False when it had none."""
        ...

    def beat(self, name: str) -> bool:
        """Count a sign of life of `name` now; False (nothing written) when it is not
        registered."""
        ...

    def last_seen(self, name: str) -> float | None:
        """The agent's last heartbeat (epoch seconds), or None when it has none. A heartbeat
        from the future (a clock that stepped back) is reset to now and read as now, so it ages
        from here instead of keeping a silent agent alive until then (a read-only view reads it
        as now and changes nothing)."""
        ...
