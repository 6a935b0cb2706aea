"""`LockTable`: the advisory path-lock table, read and changed as a whole under one guard.

The table holds one lock per (path, holder): the contract's lock object (`path`, `mode`,
`holder`, `acquired_at`, `expires_at`) plus its `ttl`, as a plain dict checked by `check_lock`.
The rules (which modes are compatible, leases, directory coverage, who may unlock what) belong to
`drasill_cli.locks`; the table only keeps the records and runs a decision exclusively:

- `all()`: every lock, for a look that changes nothing (`mesh locks`, the status screen);
- `transact(decide)`: `decide` gets the whole table and returns the `LockChanges` to make; no
  other `transact` on the same mesh runs between the read and the write, and the changes are
  applied whole. An exception raised by `decide` changes nothing and passes on.

How the exclusion is made is the backend's (see its own module); the contract is the one
above: decisions never interleave, on any host that shares the mesh, and each is applied whole
or not at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from drasill_cli import clock
from drasill_cli.lockpaths import is_key
from drasill_cli.models import LockRecord, RecordError

T = TypeVar("T")


def check_lock(raw: Any) -> dict[str, Any]:
    """`raw` as a usable lock record, or RecordError (the record is then quarantined).

    Besides `models.LockRecord`'s rules: the path is a lock key (an absolute path, or a
    repository key `git:<root commit>/<relative path>`: `drasill_cli.lockpaths`), the lease is
    more than zero and the lease end is a parseable time (it lies in the future by design, so
    it is not a `time`).
    """
    lock = LockRecord.check(raw)
    if not is_key(lock["path"]):
        raise RecordError(f"lock path {lock['path']!r} is neither absolute nor a repository key")
    if not lock["ttl"] > 0:
        raise RecordError(f"lock ttl {lock['ttl']!r} is not more than zero")
    try:
        clock.parse_iso(lock["expires_at"])
    except (ValueError, OverflowError) as exc:
        raise RecordError(f"lock expires_at {lock['expires_at']!r} is not a time") from exc
    return lock


@dataclasses.dataclass(frozen=True)
class LockChanges(Generic[T]):
    """What a `transact` decision makes of the table, and what `transact` then returns.

    `put`: lock records to store, each replacing the lock of the same (path, holder) if any;
    `remove`: locks to drop, named by their `path` and `holder` (other keys are ignored; a lock
    that is not there is skipped); `result`: handed back to the caller of `transact`.
    """

    result: T
    put: Sequence[dict[str, Any]] = ()
    remove: Sequence[dict[str, Any]] = ()


class LockTable(Protocol):
    """The advisory path-lock table, read and changed as a whole under one guard."""

    def all(self) -> list[dict[str, Any]]:
        """Every lock, each checked by `check_lock` (a damaged one is quarantined and reported
        in the backend's warnings, never returned), in no particular order."""
        ...

    def transact(self, decide: Callable[[list[dict[str, Any]]], LockChanges[T]]) -> T:
        """Run `decide` on the whole table (as `all` returns it) with every other `transact`
        of this mesh shut out, apply the changes it returns whole, and return their `result`.
        `decide` only decides: it reaches no interface (refused: `storage.exclusion`) and
        never waits.

        On a read-only view the decision runs and may change nothing (changes raise)."""
        ...
