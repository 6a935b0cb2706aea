"""Waits are life: a command blocked in `--wait` as an agent keeps that agent alive.

An agent waiting for mail, work or a lock is not gone: while `inbox`, `claim --next`, `next`,
`lock` or `register` waits, a thread beats the agent's heartbeat and renews the leases of every
lock it holds, so neither a prune on any host nor another agent's lock request takes it for
dead. The thread runs beside the wait, outside any exclusion (each beat and renewal is its own
storage call, on the thread's own connection), at a third of the shortest of `dead_after` and
the agent's lock leases, so two beats can be missed before anything lapses.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drasill_cli.errors import MeshError

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

# Beats never come closer than this (a tiny `dead_after` in a test), nor further apart than
# the longest pause (a beat costs one small write).
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0


def interval(dead_after: float, leases: list[float]) -> float:
    """Seconds between beats: a third of the shortest of `dead_after` and `leases`."""
    shortest = min([dead_after, *leases]) if dead_after > 0 else min(leases, default=0.0)
    return max(MIN_INTERVAL_S, min(MAX_INTERVAL_S, shortest / 3))


class KeepAlive:
    """The beating thread of one waiting agent (see `kept_alive`)."""

    def __init__(self, mesh: Mesh, name: str) -> None:
        self.mesh = mesh
        self.name = name
        self.beats = 0
        self.errors: list[str] = []
        self._leases = [mesh.config.locks.default_ttl]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mesh-keepalive", daemon=True)

    def _pause(self) -> float:
        return interval(self.mesh.config.lifecycle.dead_after, self._leases)

    def beat(self) -> bool:
        """One heartbeat and one renewal of the agent's locks; False when it is not registered
        (then there is no one to keep alive)."""
        from drasill_cli import locks

        if not self.mesh.touch_heartbeat(self.name):
            return False
        renewed = locks.renew_all(self.mesh, self.name)
        self._leases = [self.mesh.config.locks.default_ttl, *(float(x["ttl"]) for x in renewed)]
        self.beats += 1
        return True

    def _run(self) -> None:
        # Signals are the main thread's: Ctrl-C must reach the wait, not this thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while not self._stop.wait(self._pause()):
            try:
                if not self.beat():
                    return
            except (MeshError, OSError) as exc:  # the wait itself says when the store is lost
                self.errors.append(f"keeping {self.name} alive failed: {exc}")

    def start(self) -> None:
        """Begin beating, first after a third of the shortest lease the agent holds now."""
        try:
            held = self.mesh.backend.locks.all()
        except (MeshError, OSError):  # the wait says so if the store is lost: beat by default
            held = []
        self._leases += [float(lock["ttl"]) for lock in held if lock["holder"] == self.name]
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (a beat in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextlib.contextmanager
def kept_alive(mesh: Mesh, name: str | None) -> Iterator[KeepAlive | None]:
    """Keep agent `name` alive (heartbeat, lock leases) while the block waits; None: nothing
    to keep (no identity). A failed beat is a warning once the wait ends, never its end."""
    if name is None:
        yield None
        return
    keeper = KeepAlive(mesh, name)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()
        mesh.warnings.extend(dict.fromkeys(keeper.errors))
