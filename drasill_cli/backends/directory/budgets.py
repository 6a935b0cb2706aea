"""`BudgetBook` for the directory mesh: `budgets/paused/<agent>.json`, `budgets/warned/<agent>.json`
and the sidecar locks `budgets` (admission) and `budgets-enforce` (one enforcement pass)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from drasill_cli import clock
from drasill_cli.backends.directory.layout import (
    BUDGETS_GUARD,
    ENFORCE_GUARD,
    PAUSED_DIR,
    WARNED_DIR,
)
from drasill_cli.backends.directory.store import FileStore
from drasill_cli.storage.budgets import Stopped, check_pause, check_warning


class DirectoryBudgetBook:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def admitting(self) -> contextlib.AbstractContextManager[None]:
        return self.store.lock(BUDGETS_GUARD)

    def enforcing(self) -> contextlib.AbstractContextManager[None]:
        return self.store.lock(ENFORCE_GUARD)

    def paused(self) -> list[str]:
        return [name.removesuffix(".json") for name in self.store.names(PAUSED_DIR)]

    def pause(self, name: str, stopped: list[Stopped], over: list[dict[str, Any]]) -> None:
        record = {"agent": name, "pids": [list(s) for s in stopped], "over": over}
        # Sealed: its file's owner proves which user's watcher stopped these processes.
        self.store.write(f"{PAUSED_DIR}/{name}.json", {**record, "at": clock.iso()}, sealed=True)

    def resume(self, name: str) -> list[Stopped]:
        rel = f"{PAUSED_DIR}/{name}.json"
        found = self.store.read_checked_writer(rel, check_pause)
        self.store.remove(rel)
        if found is None:
            return []
        stopped, writer = found
        # Only what this user's watcher stopped: a pause record written by anyone else (or one
        # others may write into) names processes this watcher never stopped.
        return stopped if writer == os.geteuid() else []

    def warned(self, name: str) -> dict[str, float] | None:
        return self.store.read_checked(f"{WARNED_DIR}/{name}.json", check_warning)

    def warn(self, name: str, over: dict[str, float]) -> None:
        self.store.write(f"{WARNED_DIR}/{name}.json", {"over": over, "at": clock.iso()})

    def forget_warning(self, name: str) -> None:
        self.store.remove(f"{WARNED_DIR}/{name}.json")
