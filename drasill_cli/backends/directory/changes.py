"""`Changes` for the directory mesh: file events in the folders a topic maps to (watchfiles).

Which folder holds what is this package's knowledge; a waiter only names topics and gets
`Change`s back, never a path.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from drasill_cli.backends.directory.events import SIGNALLED, FolderEvents
from drasill_cli.backends.directory.layout import (
    AGENTS_DIR,
    AUDIT_DIR,
    INBOX_DIR,
    TASKS_DIR,
    inbox_new,
)
from drasill_cli.backends.directory.store import LOCK_DIR, STAGING_DIR, TMP_PREFIX, FileStore
from drasill_cli.storage.changes import AGENTS, INBOXES, MESH, TASKS, Change

_TOPIC_DIRS = {INBOXES: INBOX_DIR, TASKS: TASKS_DIR, AGENTS: AGENTS_DIR}


class DirectoryChanges:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def watch(self, *topics: str, tolerant: bool = False) -> FolderWatch:
        folders: set[Path] = set()
        for topic in topics:
            kind, _, name = topic.partition(":")
            if kind == MESH:
                self.store.ensure_dir(AUDIT_DIR)  # so the first event there is seen
                folders.add(self.store.root)
            elif kind == INBOXES and name:
                folders.add(self.store.ensure_dir(inbox_new(name)))
            elif kind in _TOPIC_DIRS:
                folders.add(self.store.ensure_dir(_TOPIC_DIRS[kind]))
            else:
                raise ValueError(f"unknown topic {topic!r}")
        return FolderWatch(self.store.root, sorted(folders), tolerant=tolerant)


class FolderWatch:
    """An entered watch of some mesh folders; file events come back as `Change`s."""

    def __init__(self, root: Path, folders: list[Path], *, tolerant: bool) -> None:
        self._root = str(root)
        self._events = FolderEvents(*folders, ignore_permission_denied=tolerant)

    def __enter__(self) -> FolderWatch:
        self._events.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._events.__exit__(*exc_info)

    def next(self, seconds: float, stop: threading.Event | None = None) -> set[Change] | str:
        deadline = time.monotonic() + seconds
        while True:
            raw = self._events.changes(max(0.0, deadline - time.monotonic()), stop)
            if isinstance(raw, str):
                return raw
            found = {c for _kind, path in raw if (c := self._change(path)) is not None}
            if found:
                return found
            # Only the store's own bookkeeping moved (sidecar locks, staging): keep waiting.

    def wait(self, seconds: float) -> None:
        if self.next(seconds) == SIGNALLED:
            raise KeyboardInterrupt

    def _change(self, path: str) -> Change | None:
        parts = os.path.relpath(path, self._root).split(os.sep)
        if (
            parts[0] in (LOCK_DIR, STAGING_DIR)
            or parts[-1].startswith(TMP_PREFIX)
            or parts[0].startswith("..")
        ):
            return None
        if parts[0] == INBOX_DIR:
            return Change(INBOXES, parts[1] if len(parts) >= 2 else None)
        if parts[0] == AGENTS_DIR:
            return Change(AGENTS, parts[1].removesuffix(".json") if len(parts) == 2 else None)
        if parts[0] == TASKS_DIR:
            return Change(TASKS)
        return Change(MESH)
