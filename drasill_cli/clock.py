"""Time stamps and ids.

Time stamps are ISO-8601 UTC strings with microseconds. Ids sort in creation order, also
within one clock tick: a nanosecond clock made strictly increasing per process, written in a
fixed-width Crockford base32, followed by random characters so two processes never collide.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

# A new offset closer than this to the one in use is measuring noise (half a round trip), kept
# out so that time never steps back between the threads or connections of a process.
FOLLOW_TOLERANCE_S = 0.05


class Clock:
    """The mesh's clock as one run of `mesh` reads it: this host's clock plus an offset, and the
    last id time stamp handed out (ids strictly increase within a run)."""

    __slots__ = ("last_ns", "offset_ns")

    def __init__(self) -> None:
        self.last_ns = 0
        # Seconds this host's clock is behind the mesh's (`follow`): 0 for a directory mesh;
        # for a database mesh, the server's clock minus this host's, so every host reads one.
        self.offset_ns = 0

    def follow(self, offset: float) -> None:
        wanted = round(offset * 1e9)
        if abs(wanted - self.offset_ns) > FOLLOW_TOLERANCE_S * 1e9:
            self.offset_ns = wanted

    def now(self) -> float:
        return (time.time_ns() + self.offset_ns) / 1e9

    def id_stamp(self) -> int:
        stamp = max(time.time_ns() + self.offset_ns, self.last_ns + 1)
        self.last_ns = stamp
        return stamp


# The clock in use: one per process, or one per run of `mesh` inside another process (`scoped`).
_current = Clock()


@contextmanager
def scoped() -> Iterator[Clock]:
    """A fresh clock for the block, as a new process would start with (the in-process test
    runner gives each run of `mesh` its own, so one run's offset never leaks into the next)."""
    global _current  # noqa: PLW0603 -- the clock in use, swapped for the block and restored
    saved, _current = _current, Clock()
    try:
        yield _current
    finally:
        _current = saved


def follow(offset: float) -> None:
    """Read the mesh's clock from now on: this host's clock plus `offset` seconds (a database
    mesh sets it once connected, from the server's clock). Leases, heartbeat ages, time
    stamps and ids then agree across the hosts of the mesh, whatever their own clocks say."""
    _current.follow(offset)


def now() -> float:
    """Seconds since the epoch, by the mesh's clock (this host's, unless `follow` was told
    otherwise)."""
    return _current.now()


def iso(ts: float | None = None) -> str:
    """An ISO-8601 UTC string such as `2026-11-23T11:20:26.123456Z`."""
    moment = datetime.fromtimestamp(now() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float:
    """Seconds since the epoch for an ISO-8601 string; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def id_time(record_id: str) -> float | None:
    """Seconds since the epoch at which an id from `new_id` was made; None if it is not one."""
    parts = record_id.split("-")
    if len(parts) != 3 or len(parts[1]) != 13:
        return None
    value = 0
    for char in parts[1]:
        digit = _ALPHABET.find(char)
        if digit < 0:
            return None
        value = value * 32 + digit
    return value / 1e9


def new_id(prefix: str) -> str:
    """A new id such as `m-01jd3f8k2q4c7x-9zk2`: prefix, 13 time characters, 4 random ones."""
    stamp = _current.id_stamp()
    noise = int.from_bytes(os.urandom(3), "big") % (32**4)
    return f"{prefix}-{_encode(stamp, 13)}-{_encode(noise, 4)}"
