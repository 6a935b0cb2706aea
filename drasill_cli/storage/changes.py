"""`Changes`: waiting for a change in a set of topics, never by a polling loop.

A topic names what a waiter cares about, in the mesh's words:
- `inbox(NAME)`: mail arrived for NAME (`inbox --wait`);
- `INBOXES`: any inbox changed (`mesh watch` learns whose);
- `TASKS`: a task was added, released, requeued or finished (`claim --next --wait`, the bridge);
- `AGENTS`: an agent registered, changed or left;
- `MESH`: anything a person would see (the status screen, the dashboard).

A watch collects changes from the moment it is entered, so a change made between a look and the
wait that follows still ends the wait: no wake-up is lost. A change is a hint, never the truth:
after any wake-up the waiter reads the state again (and a slow re-check covers a lost hint).
How a change travels to the watches is the backend's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import threading

INBOXES = "inbox"
TASKS = "tasks"
AGENTS = "agents"
MESH = "mesh"

# What `Watch.next` returns when nothing changed: the time ran out, `stop` was set, or a signal
# (Ctrl-C) arrived while waiting.
TIMEOUT, STOPPED, SIGNALLED = "timeout", "stop", "signal"


def inbox(name: str) -> str:
    """The topic of one agent's unread mail."""
    return f"{INBOXES}:{name}"


class Change(NamedTuple):
    """One thing that changed: its topic (`INBOXES`, `TASKS`, `AGENTS`, `MESH`) and, for an
    inbox or an agent, whose (None when the backend cannot tell)."""

    topic: str
    agent: str | None = None


class Watch(Protocol):
    """An entered watch (a context manager)."""

    def __enter__(self) -> Watch: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def next(self, seconds: float, stop: threading.Event | None = None) -> set[Change] | str:
        """The changes since the last call (batched over a few ms), or TIMEOUT after `seconds`,
        STOPPED once `stop` is set, SIGNALLED on a signal."""
        ...

    def wait(self, seconds: float) -> None:
        """Until something changed since the last wait, or `seconds` pass; Ctrl-C interrupts."""
        ...


class Changes(Protocol):
    def watch(self, *topics: str, tolerant: bool = False) -> Watch:
        """A watch of `topics`; `tolerant` keeps watching when part of the mesh cannot be read
        (the long-running `mesh watch` and dashboard must not die of one bad folder)."""
        ...
