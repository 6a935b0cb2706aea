"""`AuditLog` for the directory mesh: JSON lines in `audit/events.jsonl`, rotated by size.

Each event is written with a single write(2) on a file opened O_APPEND, so lines from many
processes never interleave on a local file system. When the file passes `audit.max_bytes` it is
renamed to `audit/events-<time>.jsonl` (under the sidecar lock `audit`) and a fresh one starts;
`audit.keep` rotated files are kept. Reading parses lines here and nowhere else.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.backends.directory.layout import (
    AUDIT_CURRENT,
    AUDIT_DIR,
    AUDIT_LOCK,
    audit_rotated,
)
from drasill_cli.backends.directory.store import (
    FileStore,
    UnusableRecord,
    decode_record,
    encode_record,
)

if TYPE_CHECKING:
    from drasill_cli.config import AuditConfig

# `latest` reads at most this much from the end of each file it looks at.
TAIL_BYTES = 64 * 1024
# How often `follow` looks again when no file event came (a lost event, a rotation).
FOLLOW_RECHECK_S = 0.5


class DirectoryAuditLog:
    def __init__(self, store: FileStore, config: AuditConfig) -> None:
        self.store = store
        self.config = config

    # ---- writing -------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> None:
        size = self.store.append(AUDIT_CURRENT, encode_record(event) + b"\n")
        if size > self.config.max_bytes:
            self._rotate(size)

    def _rotate(self, seen_size: int) -> None:
        store = self.store
        with store.lock(AUDIT_LOCK):
            info = store.stat(AUDIT_CURRENT)
            if info is None or info.st_size < seen_size:
                return  # another process rotated it already
            store.move(AUDIT_CURRENT, audit_rotated(clock.iso().replace(":", "")))
            rotated = self._files()[:-1]
            for old in rotated[: max(0, len(rotated) - self.config.keep)]:
                store.remove(old)

    # ---- reading -------------------------------------------------------------------------

    def _files(self) -> list[str]:
        """Audit files oldest first: rotated ones by time, then the current one."""
        current = AUDIT_CURRENT.rpartition("/")[2]
        rotated = [n for n in self.store.names(AUDIT_DIR, ".jsonl") if n != current]  # sorted
        return [f"{AUDIT_DIR}/{n}" for n in rotated] + [AUDIT_CURRENT]

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        for rel in self._files():
            yield from self._file_events(rel, since)

    def _file_events(self, rel: str, since: float | None) -> Iterator[dict[str, Any]]:
        """The events of one audit file; none when it is gone (rotated away and pruned)."""
        handle = self.store.open_regular(rel)
        if handle is not None:
            with handle:
                yield from events_in(handle, since)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for rel in reversed(self._files()):
            events = self._tail(rel, limit) + events
            if len(events) >= limit:
                break
        return list(reversed(events[-limit:])) if limit > 0 else []

    def _tail(self, rel: str, limit: int) -> list[dict[str, Any]]:
        """The last `limit` events of one audit file, oldest first, reading only its tail."""
        handle = self.store.open_regular(rel)
        if handle is None:
            return []
        with handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            handle.seek(start)
            lines = handle.read().split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line was cut by the seek
        return list(events_in(lines, None))[-limit:]

    def follow(
        self, since: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """Follows rotation too: when `events.jsonl` is renamed away, the old file is read to
        its end and the new one opened. The watch starts before the current file is first
        read, so nothing appended in between is missed."""
        from drasill_cli.backends.directory.events import SIGNALLED, STOPPED, FolderEvents

        for rel in self._files()[:-1]:
            yield from self._file_events(rel, since)
        folder = self.store.ensure_dir(AUDIT_DIR)
        follower = _Follower(self.store, since)
        try:
            with FolderEvents(folder) as events:
                while True:
                    yield from follower.new_events()
                    seen = events.changes(FOLLOW_RECHECK_S, stop)
                    if seen == STOPPED or (stop is not None and stop.is_set()):
                        return
                    if seen == SIGNALLED:
                        raise KeyboardInterrupt
        finally:
            follower.close()


class _Follower:
    """Reads the current audit file as it grows, and on to its successor after a rotation."""

    def __init__(self, store: FileStore, since: float | None) -> None:
        self.store = store
        self.since = since
        self.handle: Any = None
        self.pending = b""

    def new_events(self) -> Iterator[dict[str, Any]]:
        if self.handle is None:
            self.handle = self.store.open_regular(AUDIT_CURRENT)
            if self.handle is None:
                return
        yield from self._read()
        if self._rotated():
            yield from self._read()
            self.close()
            self.pending = b""
            yield from self.new_events()  # the file that took its place

    def _read(self) -> Iterator[dict[str, Any]]:
        self.pending += self.handle.read()
        cut = self.pending.rfind(b"\n") + 1
        lines, self.pending = self.pending[:cut], self.pending[cut:]
        yield from events_in(lines.splitlines(), self.since)

    def _rotated(self) -> bool:
        info = self.store.stat(AUDIT_CURRENT)
        return info is None or info.st_ino != os.fstat(self.handle.fileno()).st_ino

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One audit line as an event, or None when it is not one (skipped, never fatal)."""
    try:
        event = decode_record(raw)
    except UnusableRecord:
        return None
    fields_ok = (
        isinstance(event.get("time"), str)
        and isinstance(event.get("event"), str)
        and isinstance(event.get("actor"), str | None)
    )
    return event if fields_ok and _is_time(event["time"]) else None


def _is_time(text: str) -> bool:
    """Whether `text` is a time every reader can parse (a line with another is skipped)."""
    try:
        return len(text) <= 64 and math.isfinite(clock.parse_iso(text))
    except (ValueError, OverflowError, OSError):
        return False


def _after(event: dict[str, Any], since: float | None) -> bool:
    if since is None:
        return True
    try:
        return clock.parse_iso(str(event.get("time"))) >= since
    except ValueError:
        return False


def events_in(lines: Iterable[bytes], since: float | None) -> Iterator[dict[str, Any]]:
    """The events among `lines` (blank and unparseable lines skipped) at or after `since`."""
    for raw in lines:
        if not raw.strip():
            continue
        event = parse_line(raw)
        if event is not None and _after(event, since):
            yield event
