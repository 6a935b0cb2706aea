"""`WakeBook` for the directory mesh: `wake/NAME.json` per agent, and the sidecar lock `watch`
(with `watch.json` naming its holder) as the one-watcher guard.

A directory mesh lives on one machine, so its guard is one per mesh directory whatever the
host: the host is recorded in `watch.json` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from drasill_cli.backends.directory.layout import WAKE_DIR, WATCH_INFO, WATCH_LOCK, wake_state
from drasill_cli.backends.directory.store import Busy, FileStore
from drasill_cli.storage.wakebook import AlreadyWatching


class DirectoryWakeBook:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def load(self, agent: str) -> dict[str, Any] | None:
        return self.store.read(wake_state(agent))

    def save(self, agent: str, state: dict[str, Any]) -> None:
        self.store.write(wake_state(agent), state)

    def forget(self, agent: str) -> None:
        self.store.remove(wake_state(agent))

    def agents(self) -> list[str]:
        return [n.removesuffix(".json") for n in self.store.names(WAKE_DIR)]

    @contextlib.contextmanager
    def watching(self, host: str, holder: dict[str, Any]) -> Iterator[_Held]:
        del host  # one watcher per mesh directory: the directory is on one machine
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.store.lock(WATCH_LOCK, timeout=0))
            except Busy:
                raise AlreadyWatching(self.store.read(WATCH_INFO) or {}) from None
            self.store.write(WATCH_INFO, holder)
            yield _Held()


class _Held:
    """A flock held by this process: it cannot be lost while the process lives."""

    def confirm(self) -> None:
        return
