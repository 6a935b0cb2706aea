"""Waiting on file-system events in mesh folders, instead of sleeping in a loop.

Events are collected from the moment the watch is entered, so a change made between a look
and the wait that follows still ends the wait: no wake-up is lost. watchfiles is imported only
when a watch is made, keeping it off the start-up path of the commands that never wait.
"""

from __future__ import annotations

from pathlib import Path


class FolderEvents:
    """Changes anywhere under some folders, as a context manager with a blocking `wait`."""

    def __init__(self, *folders: Path) -> None:
        from watchfiles._rust_notify import RustNotify

        self._notify = RustNotify([str(f) for f in folders], False, False, 50, True, False)

    def __enter__(self) -> FolderEvents:
        self._notify.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._notify.__exit__(*exc_info)

    def wait(self, seconds: float) -> None:
        """Until something changed since the last wait, or `seconds` pass; Ctrl-C interrupts."""
        if self._notify.watch(50, 5, max(1, int(seconds * 1000)), None) == "signal":
            raise KeyboardInterrupt
