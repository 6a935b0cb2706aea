"""Signs of life: a pid checked on its own host with its start time, and supervisor sessions.

A pid alone proves nothing (pids are recycled), so a registration records the process start
time, and a later check compares it. A pid on another host cannot be checked from here and
counts as unknown.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
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


def tmux_targets() -> set[str] | None:
    """Every live tmux session name and pane id, or None when tmux is absent or not running."""
    tmux = shutil.which("tmux")
    if tmux is None:
        return None
    try:
        done = subprocess.run(
            [tmux, "list-panes", "-a", "-F", "#{session_name}\t#{pane_id}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return set()  # no server running: no session exists
    targets: set[str] = set()
    for line in done.stdout.splitlines():
        targets.update(part for part in line.split("\t") if part)
    return targets


def tmux_session_alive(session: str, targets: set[str] | None) -> bool | None:
    """Whether a tmux session name or pane id (`%3`) exists; None when tmux is absent."""
    if targets is None:
        return None
    base = session.split(":", 1)[0].split(".", 1)[0]
    return session in targets or base in targets
