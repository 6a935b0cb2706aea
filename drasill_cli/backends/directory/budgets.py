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

    def paused(self, *, own: bool = False) -> list[str]:
        names = [name.removesuffix(".json") for name in self.store.names(PAUSED_DIR)]
        return [n for n in names if self._own(n)] if own else names

    def _own(self, name: str) -> bool:
        """Whether `name`'s pause record is this user's: only its owner can have written it."""
        found = self.store.read_checked_writer(f"{PAUSED_DIR}/{name}.json", check_pause)
        return found is not None and found[1] == os.geteuid()

    def pause(self, name: str, stopped: list[Stopped], over: list[dict[str, Any]]) -> None:
        record = {"agent": name, "pids": [list(s) for s in stopped], "over": over}
        # Sealed: its file's owner proves which user's watcher stopped these processes.
        self.store.write(f"{PAUSED_DIR}/{name}.json", {**record, "at": clock.iso()}, sealed=True)

    def resume(self, name: str) -> list[Stopped]:
        rel = f"{PAUSED_DIR}/{name}.json"
        found = self.store.read_checked_writer(rel, check_pause)
        if found is None:
            return []
        stopped, writer = found
        if writer != os.geteuid():
            # Not this user's watcher's: it names processes this watcher never stopped. It is
            # left as it is (its writer's watcher may resume it), and resumes nothing here.
            return []
        self.store.remove(rel)
        return stopped

    def warned(self, name: str) -> dict[str, float] | None:
        return self.store.read_checked(f"{WARNED_DIR}/{name}.json", check_warning)

    def warn(self, name: str, over: dict[str, float]) -> None:
        self.store.write(f"{WARNED_DIR}/{name}.json", {"over": over, "at": clock.iso()})

    def forget_warning(self, name: str) -> None:
        self.store.remove(f"{WARNED_DIR}/{name}.json")
