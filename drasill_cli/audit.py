"""The audit log: every state change as one JSON line, safe under concurrent appends.

Each event is written with a single write(2) on a file opened O_APPEND, so lines from many
processes never interleave on a local file system. When the file passes `audit.max_bytes` it is
renamed to `audit/events-<time>.jsonl` (under a lock) and a fresh one starts; `audit.keep`
rotated files are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.backends.directory.store import UnusableRecord, decode_record, encode_record

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

AUDIT_DIR = "audit"
CURRENT = f"{AUDIT_DIR}/events.jsonl"


def append(mesh: Mesh, event: str, actor: str | None, **details: Any) -> None:
    """Append one event line: time, event, actor and details."""
    line = {"time": clock.iso(), "event": event, "actor": actor, **details}
    data = encode_record(line) + b"\n"
    size = mesh.store.append(CURRENT, data)
    if size > mesh.config.audit.max_bytes:
        _rotate(mesh, size)


def _rotate(mesh: Mesh, seen_size: int) -> None:
    store = mesh.store
    with store.lock("audit"):
        current = store.path(CURRENT)
        try:
            if os.stat(current, follow_symlinks=False).st_size < seen_size:
                return  # another process rotated it already
        except FileNotFoundError:
            return
        stamp = clock.iso().replace(":", "")
        store.move(CURRENT, f"{AUDIT_DIR}/events-{stamp}.jsonl")
        rotated = log_files(mesh)[:-1]
        for old in rotated[: max(0, len(rotated) - mesh.config.audit.keep)]:
            store.remove(old)


def log_files(mesh: Mesh) -> list[str]:
    """Audit files oldest first: rotated ones by time, then the current one."""
    current = CURRENT.rpartition("/")[2]
    rotated = [n for n in mesh.store.names(AUDIT_DIR, ".jsonl") if n != current]  # sorted
    return [f"{AUDIT_DIR}/{n}" for n in rotated] + [CURRENT]


def read_events(mesh: Mesh, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every parseable event, oldest first, optionally only those at or after `since`."""
    for rel in log_files(mesh):
        yield from _file_events(mesh, rel, since)


def _file_events(mesh: Mesh, rel: str, since: float | None) -> Iterator[dict[str, Any]]:
    """The events of one audit file; none when it is gone (rotated away and pruned)."""
    handle = mesh.store.open_regular(rel)
    if handle is not None:
        with handle:
            yield from _events_in(handle, since)


def tail_events(mesh: Mesh, rel: str, limit: int, tail_bytes: int) -> list[dict[str, Any]]:
    """The last `limit` events of one audit file, oldest first, reading only its tail."""
    handle = mesh.store.open_regular(rel)
    if handle is None:
        return []
    with handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - tail_bytes)
        handle.seek(start)
        lines = handle.read().split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line was cut by the seek
    return list(_events_in(lines, None))[-limit:]


def _parse(raw: bytes) -> dict[str, Any] | None:
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
    return event if fields_ok else None


def _after(event: dict[str, Any], since: float | None) -> bool:
    if since is None:
        return True
    try:
        return clock.parse_iso(str(event.get("time"))) >= since
    except ValueError:
        return False


def follow(mesh: Mesh, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every event from `since` on, then new ones as they are appended (never returns).

    Waits on file-system events (watchfiles), not a sleep loop, and follows rotation: when
    `events.jsonl` is renamed away, the old file is read to its end and the new one opened.
    """
    import watchfiles

    for rel in log_files(mesh)[:-1]:
        yield from _file_events(mesh, rel, since)
    current = mesh.store.path(CURRENT)
    mesh.store.ensure_dir(AUDIT_DIR)
    handle = None
    pending = b""
    try:
        for _changes in watchfiles.watch(
            current.parent,
            debounce=20,
            step=10,
            rust_timeout=500,
            yield_on_timeout=True,
            raise_interrupt=True,
        ):
            if handle is None:
                handle = mesh.store.open_regular(CURRENT)
                if handle is None:
                    continue
            pending += handle.read()
            pending, lines = _split(pending)
            yield from _events_in(lines.splitlines(), since)
            if _rotated(handle.fileno(), current):
                pending += handle.read()
                pending, lines = _split(pending)
                yield from _events_in(lines.splitlines(), since)
                handle.close()
                handle, pending = None, b""
    finally:
        if handle is not None:
            handle.close()


def _split(buffer: bytes) -> tuple[bytes, bytes]:
    """Complete lines, and the unfinished rest kept for the next read."""
    cut = buffer.rfind(b"\n") + 1
    return buffer[cut:], buffer[:cut]


def _events_in(lines: Iterable[bytes], since: float | None) -> Iterator[dict[str, Any]]:
    for raw in lines:
        if not raw.strip():
            continue
        event = _parse(raw)
        if event is not None and _after(event, since):
            yield event


def _rotated(fd: int, current: os.PathLike[str]) -> bool:
    try:
        return os.stat(current, follow_symlinks=False).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True
