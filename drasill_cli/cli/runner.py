"""COMMAND of `mesh lock PATH -- COMMAND`: run so that it never outlives its runner.

A lock held for a command is worth what the command's life is bound to the runner's: a
command left running after its runner died would go on editing while another agent, granted
the lock, edits too. So COMMAND

- runs in a process group of its own, and the runner passes on to that group every signal it
  can catch (SIGTERM, SIGHUP, SIGINT, SIGUSR1, ...), so a command under a supervisor ends as
  the supervisor asks;
- gets SIGKILL from the kernel the moment its runner dies, however it dies (SIGKILL included):
  `prctl(PR_SET_PDEATHSIG)`, set in the child before it executes COMMAND;
- on a terminal, takes the terminal's foreground: it reads the terminal, Ctrl-C typed there
  reaches it (and ends the run with 130), and when Ctrl-Z stops it the runner's job stops too,
  so the shell gets the terminal back; `fg` continues both.

The child's processes that leave the group (a daemon calling setsid) are beyond reach, as for
any supervisor that is not a container.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# What the runner does not pass on: signals no process can catch, the notice of its own child,
# the terminal's job control (handled by stopping and continuing with the command), and the
# faults of the runner's own code (passing on a crash would hide it).
NOT_FORWARDED = frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGCHLD,
        signal.SIGCONT,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGABRT,
    }
)
FORWARDED = tuple(sorted(set(signal.valid_signals()) - NOT_FORWARDED))


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up before forking (the child must not load libraries); None where
    there is none (not Linux)."""
    import ctypes

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _foreground_terminal() -> int | None:
    """The descriptor of the controlling terminal when the runner is in its foreground."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except OSError:
            continue
    return None


@contextlib.contextmanager
def _ttou_blocked() -> Iterator[None]:
    """SIGTTOU blocked: a process not in the terminal's foreground may then hand it over."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _hand_terminal(fd: int, group: int) -> None:
    with _ttou_blocked(), contextlib.suppress(OSError):
        os.tcsetpgrp(fd, group)


class Child:
    """COMMAND, started: `wait` passes signals on until it ends, and returns its exit code."""

    def __init__(self, proc: subprocess.Popen[Any], terminal: int | None) -> None:
        self.proc = proc
        self.terminal = terminal

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def _stopped(self) -> None:
        """COMMAND stopped on the terminal (Ctrl-Z): stop the runner's job too, so the shell
        gets the terminal back; once continued, continue COMMAND (in the foreground after
        `fg`)."""
        assert self.terminal is not None  # noqa: S101 -- only called with a terminal
        _hand_terminal(self.terminal, os.getpgrp())
        os.killpg(os.getpgrp(), signal.SIGSTOP)
        # Continued: by `fg` when the terminal is the runner's again, else by `bg`.
        with contextlib.suppress(OSError):
            if os.tcgetpgrp(self.terminal) == os.getpgrp():
                _hand_terminal(self.terminal, self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGCONT)

    def wait(self) -> int:
        """Wait for COMMAND, passing on each catchable signal to its group; its exit code (128 +
        N when signal N ended it, as a shell says)."""
        previous: dict[int, Any] = {}
        for signum in FORWARDED:
            with contextlib.suppress(OSError, ValueError):
                previous[signum] = signal.signal(signum, self._forward)
        flags = os.WUNTRACED if self.terminal is not None else 0
        try:
            while True:
                _pid, status = os.waitpid(self.proc.pid, flags)
                if not os.WIFSTOPPED(status):
                    break
                self._stopped()
        finally:
            for forwarded, handler in previous.items():
                signal.signal(forwarded, handler)
            if self.terminal is not None:
                with contextlib.suppress(OSError):
                    if os.tcgetpgrp(self.terminal) == self.proc.pid:
                        _hand_terminal(self.terminal, os.getpgrp())
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        return 128 - code if code < 0 else code


def start(argv: list[str]) -> Child:
    """Start COMMAND with the runner's stdio, bound to the runner (see the module's doc).

    FileNotFoundError or another OSError when it cannot be executed.
    """
    prctl = _prctl()
    runner = os.getpid()
    terminal = _foreground_terminal()

    def bind_to_runner() -> None:  # in the child, between fork and exec
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != runner:  # the runner died before the line above took effect
            os.kill(os.getpid(), signal.SIGKILL)
        if terminal is not None:
            _hand_terminal(terminal, os.getpgrp())

    proc = subprocess.Popen(
        argv,
        process_group=0,
        preexec_fn=bind_to_runner,  # noqa: PLW1509 -- prctl (looked up before), getppid, tcsetpgrp
    )
    if terminal is not None:  # as shells do: both sides, so neither waits on the other
        _hand_terminal(terminal, proc.pid)
    return Child(proc, terminal)
