"""`LockTable` for the directory mesh: one record file per (path, holder), one sidecar flock.

Each lock is `locks/<sha256 of path>-<holder>.json` (`layout.lock_record`). `transact` reads the
whole folder and applies the decision under the sidecar lock `locks`, so two decisions never
interleave, across threads and processes alike. A record that is not a lock, or whose file name
does not match its path and holder (a file copied or renamed by hand), is quarantined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drasill_cli.backends.directory.layout import LOCK_TABLE_DIR, LOCK_TABLE_GUARD, lock_record
from drasill_cli.backends.directory.store import FileStore
from drasill_cli.models import RecordError
from drasill_cli.storage.exclusion import deciding
from drasill_cli.storage.locktable import LockChanges, check_lock

T = TypeVar("T")


class DirectoryLockTable:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def all(self) -> list[dict[str, Any]]:
        table = []
        for name in self.store.names(LOCK_TABLE_DIR):
            lock = self.store.read_checked(f"{LOCK_TABLE_DIR}/{name}", _check_named(name))
            if lock is not None:
                table.append(lock)
        return table

    def transact(self, decide: Callable[[list[dict[str, Any]]], LockChanges[T]]) -> T:
        if self.store.read_only:  # a dry run: no sidecar to create, and nothing may change
            changes = deciding("LockTable.transact", decide, self.all())
            if changes.put or changes.remove:
                raise RuntimeError("a lock change was attempted through a read-only view")
            return changes.result
        with self.store.lock(LOCK_TABLE_GUARD):
            changes = deciding("LockTable.transact", decide, self.all())
            for lock in changes.remove:
                self.store.remove(lock_record(lock["path"], lock["holder"]))
            for lock in changes.put:
                self.store.write(lock_record(lock["path"], lock["holder"]), check_lock(lock))
        return changes.result


def _check_named(name: str) -> Callable[[Any], dict[str, Any]]:
    """`check_lock` for the file `name`: the record must also be the one its name says."""
    rel = f"{LOCK_TABLE_DIR}/{name}"

    def check(raw: Any) -> dict[str, Any]:
        lock = check_lock(raw)
        if lock_record(lock["path"], lock["holder"]) != rel:
            raise RecordError("its file name does not match its path and holder")
        return lock

    return check
