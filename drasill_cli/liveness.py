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
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

START_TIME_TOLERANCE_S = 0.05


@functools.cache
def hostname() -> str:
    """This machine's host name, as recorded in agent records."""
    return os.uname().nodename  # what gethostname(2) returns, without importing socket


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None when no such process exists."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return None
    except psutil.AccessDenied:
        return None


def same_start(started: float, recorded: float) -> bool:
    """Whether a process that started at `started` is the one recorded as starting at `recorded`
    (within the clock resolution that process tables report): a recycled pid never is."""
    return abs(started - recorded) <= START_TIME_TOLERANCE_S


def pid_alive(pid: int, started: float | None, host: str) -> bool | None:
    """True/False for a pid on this host; None when it cannot be judged (another host)."""
    if host != hostname():
        return None
    now_started = process_start_time(pid)
    if now_started is None or started is None:
        return False
    return same_start(now_started, started)


class HeimdallFiles(NamedTuple):
    """The files heimdall keeps for one session in its socket directory."""

    sock: Path  # the session's Unix socket
    pid: Path  # line 1: the supervisor's pid; line 2: the pid of the process it supervises


def heimdall_files(socket_dir: Path, session: str) -> HeimdallFiles:
    """`<socket_dir>/<session>.sock` and `<socket_dir>/<session>.pid`."""
    return HeimdallFiles(socket_dir / f"{session}.sock", socket_dir / f"{session}.pid")


def heimdall_pids(pid_file: Path) -> tuple[int | None, int | None]:
    """The supervisor's pid (line 1 of a heimdall `.pid` file) and its child's (line 2).

    Each is None when the file cannot be read or its line is missing or not a number.
    """
    try:
        lines = pid_file.read_text().splitlines()
    except (OSError, ValueError):
        return None, None
    return _pid_line(lines, 0), _pid_line(lines, 1)


def _pid_line(lines: list[str], index: int) -> int | None:
    try:
        return int(lines[index].strip())
    except (IndexError, ValueError):
        return None


def heimdall_session_alive(socket_dir: Path, session: str) -> bool:
    """A heimdall session lives while its `.sock` exists and the supervisor in `.pid` runs."""
    files = heimdall_files(socket_dir, session)
    if not files.sock.exists():
        return False
    supervisor, _child = heimdall_pids(files.pid)
    if supervisor is None:
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
        self._pids: dict[str, int | None] = {}
        for pane in panes:
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


def tmux_run(
    args: Sequence[str], *, timeout: float, start_new_session: bool = False
) -> subprocess.CompletedProcess[str] | None:
    """Run `tmux ARGS` (tmux found on PATH), output captured as text; None when tmux is absent.

    A non-zero exit is returned, not raised; OSError and TimeoutExpired reach the caller, which
    handles them its own way.
    """
    tmux = shutil.which("tmux")
    if tmux is None:
        return None
    return subprocess.run(
        [tmux, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=start_new_session,
    )


def tmux_panes() -> TmuxPanes | None:
    """Every live tmux pane (one `tmux list-panes -a` call); None when tmux is absent or fails."""
    try:
        done = tmux_run(
            ["list-panes", "-a", "-F", "#{session_name}\t#{pane_id}\t#{pane_pid}"], timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done is None:
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
