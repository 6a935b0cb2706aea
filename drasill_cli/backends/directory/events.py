"""Waiting on file-system events in mesh folders, instead of sleeping in a loop.

Events are collected from the moment the watch is entered, so a change made between a look
and the wait that follows still ends the wait: no wake-up is lost. watchfiles is imported only
when a watch is made, keeping it off the start-up path of the commands that never wait.

`RustNotify` is watchfiles' private core (`watchfiles._rust_notify`): the public
`watchfiles.watch` generator only starts watching on its first iteration, after the look, and
takes one timeout for all its waits. pyproject.toml pins watchfiles to the tested range;
tests/test_private_apis.py fails when RustNotify's constructor or `watch` signature changes and
proves a change made between entering and the first wait is seen.
"""

from __future__ import annotations

import threading
from pathlib import Path

from drasill_cli.storage.changes import SIGNALLED, STOPPED, TIMEOUT

__all__ = ["SIGNALLED", "STOPPED", "TIMEOUT", "FolderEvents"]


class FolderEvents:
    """Changes anywhere under some folders, as a context manager with blocking waits.

    `ignore_permission_denied` keeps watching when a subfolder cannot be read (the long-running
    `mesh watch` must not die of one bad folder).
    """

    def __init__(self, *folders: Path, ignore_permission_denied: bool = False) -> None:
        from watchfiles._rust_notify import RustNotify

        self._folders = [str(f) for f in folders]
        self._notify = RustNotify(self._folders, False, False, 50, True, ignore_permission_denied)

    def __enter__(self) -> FolderEvents:
        self._notify.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._notify.__exit__(*exc_info)

    def changes(
        self, seconds: float, stop: threading.Event | None = None, step_ms: int = 5
    ) -> set[tuple[int, str]] | str:
        """The (change, path) pairs since the last call, batched over 50 ms; or TIMEOUT after
        `seconds`, STOPPED once `stop` is set, SIGNALLED on a signal.

        A batch naming a path that is not UTF-8 (a name planted in the mesh) cannot be handed
        over (watchfiles raises): it counts as a change of every watched folder, so each waiter
        looks at the stored state again (a change is a hint, never the truth).
        """
        try:
            result: set[tuple[int, str]] | str = self._notify.watch(
                50, step_ms, max(1, int(seconds * 1000)), stop
            )
        except RuntimeError as exc:  # watchfiles' WatchfilesRustInternalError
            if "decode path" not in str(exc):
                raise
            return {(_MODIFIED, folder) for folder in self._folders}
        return result


_MODIFIED = 2  # watchfiles' Change.modified
