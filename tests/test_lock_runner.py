"""`mesh lock PATH -- COMMAND`: locks held before the run stay as they were, signals reach
COMMAND, and COMMAND never outlives its runner (issue 24, point 11).

Real subprocesses: what is tested is how processes live and die together."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drasill_cli import locks
from tests.conftest import MeshRunner
from tests.wake_support import wait_until

pytestmark = pytest.mark.both_backends

# COMMAND for the signal tests: says it is ready, then reports each signal it gets (by name)
# and exits with 40 + the signal's number on SIGTERM, SIGINT or SIGHUP.
TRAPPER = """
import signal, sys, time
out = open(sys.argv[1], "a", buffering=1)
def got(signum, _frame):
    out.write(signal.Signals(signum).name + "\\n")
    if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        sys.exit(40 + signum)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGQUIT, signal.SIGWINCH, signal.SIGALRM):
    signal.signal(sig, got)
out.write("ready\\n")
while True:
    time.sleep(0.05)
"""

# COMMAND of the first agent in the kill rounds: appends a tick every 10 ms, forever.
TICKER = """
import os, sys, time
with open(sys.argv[1], "a", buffering=1) as out:
    out.write(f"pid {os.getpid()}\\n")
    while True:
        out.write("tick\\n")
        time.sleep(0.01)
"""

# COMMAND of the second agent: inside the critical section, checks that the first agent's
# command writes no more (it is dead), and says so.
WATCHER = """
import os, sys, time
path = sys.argv[1]
before = os.path.getsize(path)
time.sleep(0.3)
after = os.path.getsize(path)
print("overlap" if after != before else "alone", flush=True)
"""


def wait_for_lock(cli: MeshRunner) -> None:
    """Until some lock is held (looked at in-process: cheaper than running `mesh locks`)."""
    with cli.open() as mesh:
        wait_until(lambda: mesh.backend.exists() and bool(locks.list_locks(mesh)), timeout=30)


@pytest.mark.parametrize(
    ("before", "asked", "during"),
    [
        ("write", "read", "write"),  # never weakened
        ("read", "write", "write"),  # strengthened for the run, then read again
        ("intent", "intent", "intent"),
        ("read", "co_write", "write"),  # neither gives the other: write gives both
    ],
)
def test_a_lock_held_before_the_run_is_neither_released_nor_changed_after(
    cli: MeshRunner, tmp_path: Path, before: str, asked: str, during: str
) -> None:
    cli.register("alpha")
    target = str(tmp_path / "f")
    other = str(tmp_path / "g")
    cli.json("lock", target, "--mode", before, "--ttl", "900", "--as", "alpha")
    script = f"{shlex.join(cli.argv('locks', '--json'))}"
    done = cli.run(
        "lock", target, other, "--mode", asked, "--ttl", "60", "--as", "alpha",
        "--", "sh", "-c", script, process=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = {(lock["path"], lock["mode"]) for lock in json.loads(done.stdout)}
    assert seen == {(target, during), (other, asked)}  # a write held is not weakened meanwhile
    after = [lock for lock in cli.json("locks") if lock["holder"] == "alpha"]
    assert [(lock["path"], lock["mode"], lock["ttl"]) for lock in after] == [(target, before, 900)]
    # kept as it was, its lease too; the lock taken for the run is released


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Runner processes of a test, each in a session of its own; all killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_every_catchable_signal_reaches_the_command_and_its_code_is_the_exit_code(
    cli: MeshRunner, tmp_path: Path, runners: list[subprocess.Popen[bytes]]
) -> None:
    cli.register("alpha")
    target = str(tmp_path / "f")
    log = tmp_path / "signals"
    runner = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--", sys.executable, "-c", TRAPPER, str(log)),
        env=cli.env,
        start_new_session=True,
    )
    runners.append(runner)
    wait_until(lambda: "ready" in lines(log), timeout=30)
    sent = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGWINCH, signal.SIGALRM]
    for signum in sent:
        os.kill(runner.pid, signum)
        wait_until(lambda s=signum: s.name in lines(log), timeout=10)  # type: ignore[misc]
    assert runner.poll() is None  # none of them ended the runner
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=30) == 40 + signal.SIGTERM
    assert lines(log) == ["ready", *(s.name for s in sent), "SIGTERM"]
    assert cli.json("locks") == []


def test_an_interrupted_long_command_ends_with_130_and_releases(
    cli: MeshRunner, tmp_path: Path, runners: list[subprocess.Popen[bytes]]
) -> None:
    cli.register("alpha")
    target = str(tmp_path / "f")
    runner = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--", "sleep", "100"),
        env=cli.env,
        start_new_session=True,
    )
    runners.append(runner)
    wait_for_lock(cli)
    time.sleep(0.2)  # let `sleep` start
    os.kill(runner.pid, signal.SIGINT)  # what Ctrl-C sends it
    assert runner.wait(timeout=30) == 130
    assert cli.json("locks") == []


def test_a_killed_runner_takes_its_command_along_before_anyone_else_enters(
    cli: MeshRunner, tmp_path: Path, runners: list[subprocess.Popen[bytes]]
) -> None:
    """Rounds: alpha's runner (alpha's registered process) is SIGKILLed mid-run, and beta then
    enters the same critical section at once (alpha is dead): alpha's command must be gone."""
    cli.register("beta", "alpha")
    target = str(tmp_path / "f")
    for round_ in range(3):
        ticks = tmp_path / f"ticks-{round_}"
        register = shlex.join(cli.argv("register", "alpha", "--replace", "--pid"))
        lock = shlex.join(
            cli.argv("lock", target, "--as", "alpha", "--", sys.executable, "-c", TICKER)
        )
        runner = subprocess.Popen(
            ["sh", "-c", f'{register} "$$" >/dev/null && exec {lock} {shlex.quote(str(ticks))}'],
            env=cli.env,
            start_new_session=True,
        )
        runners.append(runner)
        wait_until(lambda t=ticks: lines(t).count("tick") >= 3, timeout=30)  # type: ignore[misc]
        command_pid = int(lines(ticks)[0].split()[1])
        os.kill(runner.pid, signal.SIGKILL)
        assert runner.wait(timeout=10) == -signal.SIGKILL
        done = cli.run(
            "lock", target, "--as", "beta", "--wait", "30", "--",
            sys.executable, "-c", WATCHER, str(ticks), process=True,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (0, "alone\n"), (round_, done.stderr)
        wait_until(lambda p=command_pid: not _running(p), timeout=10)  # type: ignore[misc]


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_a_command_on_a_terminal_reads_it_and_ctrl_c_ends_it_with_130(
    cli: MeshRunner, tmp_path: Path
) -> None:
    """COMMAND runs in a process group of its own, yet in the terminal's foreground: it reads
    the terminal, and Ctrl-C typed there ends it (exit 130)."""
    cli.register("alpha")
    target = str(tmp_path / "f")
    script = "print('got', input(), flush=True); import time; time.sleep(100)"
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    runner = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--", sys.executable, "-c", script),
        env=cli.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,  # noqa: PLW1509 -- the test process has no threads here
    )
    os.close(slave)
    seen = b""
    try:
        wait_for_lock(cli)
        time.sleep(0.3)
        os.write(master, b"hello\n")
        deadline = time.monotonic() + 30
        while b"got hello" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    seen += os.read(master, 1024)
        assert b"got hello" in seen
        os.write(master, b"\x03")  # Ctrl-C
        assert runner.wait(timeout=30) == 130
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        os.close(master)
    assert cli.json("locks") == []
