"""Signs of life: a pid checked on its own host with its start time, and supervisor sessions.

A pid alone proves nothing (pids are recycled), so a registration records the process start
time, and a later check compares it. A pid on another host cannot be checked from here and
counts as unknown.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

START_TIME_TOLERANCE_S = 0.05


@functools.cache
def hostname() -> str:
    """This machine's host name, as recorded in agent records."""
    return socket.gethostname()


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None when no such process exists."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return None
    except psutil.AccessDenied:
        return None


def pid_alive(pid: int, started: float | None, host: str) -> bool | None:
    """True/False for a pid on this host; None when it cannot be judged (another host)."""
    if host != hostname():
        return None
    now_started = process_start_time(pid)
    if now_started is None or started is None:
        return False
    return abs(now_started - started) <= START_TIME_TOLERANCE_S


def heimdall_session_alive(socket_dir: Path, session: str) -> bool:
    """A heimdall session lives while its `.sock` exists and the supervisor in `.pid` runs."""
    sock = socket_dir / f"{session}.sock"
    pid_file = socket_dir / f"{session}.pid"
    if not sock.exists():
        return False
    try:
        first_line = pid_file.read_text().splitlines()[0]
        supervisor = int(first_line.strip())
    except (OSError, IndexError, ValueError):
        return False
    try:
        os.kill(supervisor, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass(frozen=True)
class TmuxPane:
    """One tmux pane: its session's name, its id (`%3`) and the pid of the process it runs."""

    session: str
    pane_id: str
    pid: int | None


class TmuxPanes:
    """Every tmux pane from one listing, looked up by session name or pane id."""

    def __init__(self, panes: Iterable[TmuxPane] = ()) -> None:
        self.panes = list(panes)
        self._pids: dict[str, int | None] = {}
        for pane in self.panes:
            self._pids.setdefault(pane.session, pane.pid)  # a session counts its first pane
            self._pids[pane.pane_id] = pane.pid

    def alive(self, target: str) -> bool:
        """Whether a session name or pane id (`%3`) exists (`sess:1.0` counts as `sess`)."""
        return target in self._pids or _tmux_session(target) in self._pids

    def pid(self, target: str) -> int | None:
        """The process in the pane `target` names, or in the first pane of its session."""
        if target in self._pids:
            return self._pids[target]
        return self._pids.get(_tmux_session(target))


def _tmux_session(target: str) -> str:
    """The session part of a tmux target (`sess:window.pane`)."""
    return target.split(":", 1)[0].split(".", 1)[0]


def tmux_panes() -> TmuxPanes | None:
    """Every live tmux pane (one `tmux list-panes -a` call); None when tmux is absent or fails."""
    tmux = shutil.which("tmux")
    if tmux is None:
        return None
    try:
        done = subprocess.run(
            [tmux, "list-panes", "-a", "-F", "#{session_name}\t#{pane_id}\t#{pane_pid}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return TmuxPanes()  # no server running: no session exists
    panes = []
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            session, pane_id, pid = parts
            panes.append(TmuxPane(session, pane_id, int(pid) if pid.isdigit() else None))
    return TmuxPanes(panes)


def tmux_session_alive(session: str, panes: TmuxPanes | None) -> bool | None:
    """Whether a tmux session name or pane id (`%3`) exists; None when tmux is absent."""
    if panes is None:
        return None
    return panes.alive(session)
