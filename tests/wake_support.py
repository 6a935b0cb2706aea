"""Helpers shared by the wake and watch tests: tmux panes running line readers, and waits."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

# Reads lines from the terminal and appends each, with the time it was read, to a file. It
# writes "ready" first so the test knows the pane is waiting for input.
READER = """\
import sys, time
with open(sys.argv[1], "a") as out:
    out.write("ready\\n"); out.flush()
    for line in sys.stdin:
        out.write(f"{time.time()} {line!r}\\n"); out.flush()
"""

# Prints continuously (a busy agent) until the file argv[3] exists, or for at most argv[2]
# seconds, notes when it went quiet, then reads.
BUSY_THEN_READ = """\
import os, sys, time
end = time.time() + float(sys.argv[2])
release = sys.argv[3] if len(sys.argv) > 3 else None
with open(sys.argv[1], "a") as out:
    out.write("busy\\n")
n = 0
while time.time() < end and not (release and os.path.exists(release)):
    n += 1
    print(f"working {n}", flush=True)
    time.sleep(0.05)
with open(sys.argv[1], "a") as out:
    out.write(f"quiet {time.time()}\\n"); out.flush()
    for line in sys.stdin:
        out.write(f"{time.time()} {line!r}\\n"); out.flush()
"""


def start_pane(session: str, script: str, *args: str, tmp: Path) -> Path:
    """A detached tmux session running `script` under Python; returns its output file."""
    program = tmp / f"{session}.py"
    program.write_text(script)
    out = tmp / f"{session}.out"
    command = [sys.executable, str(program), str(out), *args]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "--", *command], check=True)
    wait_until(lambda: out.exists() and out.read_text() != "", 10)
    return out


def read_lines(out: Path) -> list[str]:
    """Lines the pane's program has read, without its own markers."""
    return [
        line
        for line in out.read_text().splitlines()
        if line not in ("ready", "busy") and not line.startswith("quiet")
    ]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def wait_quiet(session: str, seconds: float) -> None:
    """Wait until tmux reports no pane activity for `seconds` (its clock has 1 s steps)."""

    def quiet() -> bool:
        done = subprocess.run(
            ["tmux", "display-message", "-p", "-t", f"={session}:", "#{window_activity}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return time.time() - (int(done.stdout.strip()) + 1) >= seconds

    assert wait_until(quiet, seconds + 3)
