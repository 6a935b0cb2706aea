"""The rule of every storage exclusion: its decision decides, and nothing else.

`Presence.change`, `TaskBoard.change` and `LockTable.transact` run a `decide` callback under
the backend's exclusion (a row lock or a guard on PostgreSQL, a sidecar flock on a directory
mesh). A decision is a function of what it was given (plus what its caller looked up before
the exclusion): it neither waits nor reaches the storage again. Audit lines, notices, lock
releases, task requeues and mail archives happen after the commit, each idempotent, so a
process killed between the two leaves work that the next retire or prune completes.

Both backends run every decision inside `deciding`, and every path into stored state (a
database transaction or statement, a directory mesh's folder walk) first calls `refuse_inside`:
a decision that calls another interface (or the same one) fails at once with
`InsideExclusion`, a programming error, on both backends alike, instead of nesting a savepoint
or a second commit inside the exclusion. The cost is one thread-local read per operation (a
thread-local, not a context variable: `threading` is loaded on every command anyway, while
`contextvars` would add to start-up; a decision never awaits, so its thread is its context).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")
R = TypeVar("R")


class _Deciding(threading.local):
    """The decision running in this thread now: the exclusion's name, None outside one."""

    exclusion: str | None = None


_deciding = _Deciding()


class InsideExclusion(RuntimeError):
    """A decision under a storage exclusion reached the storage (a bug, never an outcome)."""


def deciding(exclusion: str, decide: Callable[[A], R], current: A) -> R:
    """`decide(current)`, marked as running under `exclusion`: any storage call it makes
    raises `InsideExclusion`."""
    outer, _deciding.exclusion = _deciding.exclusion, exclusion
    try:
        return decide(current)
    finally:
        _deciding.exclusion = outer


def deciding2(exclusion: str, decide: Callable[[A, B], R], first: A, second: B) -> R:
    """`deciding` for a callback of two arguments (a task change's event: before, after)."""
    outer, _deciding.exclusion = _deciding.exclusion, exclusion
    try:
        return decide(first, second)
    finally:
        _deciding.exclusion = outer


def refuse_inside(entry: str) -> None:
    """Raise `InsideExclusion` when called from a decision (every storage entry calls this
    before it touches stored state)."""
    exclusion = _deciding.exclusion
    if exclusion is not None:
        raise InsideExclusion(
            f"{entry} was called inside the decision of {exclusion}: a decision only decides; "
            "look things up before the exclusion and act after its commit"
        )


def inside() -> str | None:
    """The exclusion whose decision runs now, or None."""
    return _deciding.exclusion
