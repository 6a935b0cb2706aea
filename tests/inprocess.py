"""Run `mesh` inside the test process: `main()` with the run's own argv, streams, environment,
working directory and clock, returning what `subprocess.run(..., text=True)` would.

A subprocess costs 110-150 ms of interpreter start and imports per command; a run in process
costs what the command itself does. What a process would start afresh is set up for the call
and put back after it: `sys.argv`, `sys.stdin`/`stdout`/`stderr` (bytes, decoded as the
subprocess's output is: the same encoding, universal newlines), `os.environ` (replaced
wholesale by the run's environment), the working directory, the umask, the handlers of the
signals a command may catch, and the mesh's clock (`clock.scoped`: a database mesh's offset
never leaks into the next run). The CLI itself closes the mesh it opened when the command ends.

What a subprocess proves and this cannot (races between processes, signals, kill -9, start-up
time, imports, a terminal, `lock -- CMD`, servers, commands left running in the background)
stays a real process: `MeshRunner.run(..., process=True)`. Runs cannot overlap (one process has
one set of streams) and are refused off the main thread. `timeout` does not apply in process
(pytest-timeout ends a run that hangs).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from drasill_cli import clock

# The signals a command installs handlers for (watch, the lock runner, the dashboard).
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_running = threading.Lock()


def _parent_encoding() -> str:
    """The encoding `subprocess.run(text=True)` uses both ways (the locale's, as `open`'s)."""
    return io.TextIOWrapper(io.BytesIO()).encoding


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _process_state(argv0: str, args: Sequence[str], cwd: str | Path | None) -> Iterator[None]:
    """argv, the working directory, the umask and signal handlers, put back after the block."""
    saved_argv = sys.argv
    saved_cwd = os.getcwd()
    mask = os.umask(0o022)
    os.umask(mask)
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}  # run_mesh: the main thread
    sys.argv = [argv0, *args]
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.umask(mask)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _decoded(data: bytes, encoding: str) -> str:
    """Bytes as `subprocess.run(text=True)` gives them: decoded, universal newlines."""
    return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")


def run_mesh(
    args: Sequence[str],
    *,
    input: str | bytes | None,
    env: Mapping[str, str],
    cwd: str | Path | None,
) -> subprocess.CompletedProcess[str]:
    """`mesh ARGS` in this process, as `subprocess.run(argv, input=..., capture_output=True,
    text=True, env=env, cwd=cwd)` would run it."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "mesh runs in process only from the test's main thread (a thread racing others "
            "races nothing: runs cannot overlap); pass process=True"
        )
    if not _running.acquire(blocking=False):
        raise RuntimeError(
            "an in-process run of mesh is already going (another thread?): in-process runs "
            "cannot overlap; pass process=True to run this one as a subprocess"
        )
    try:
        return _run(list(args), input=input, env=env, cwd=cwd)
    finally:
        _running.release()


def _run(
    args: list[str],
    *,
    input: str | bytes | None,
    env: Mapping[str, str],
    cwd: str | Path | None,
) -> subprocess.CompletedProcess[str]:
    from drasill_cli.cli.app import main

    # The child's stdio takes the locale the test process has (its environment is ours, with
    # the mesh's variables changed), which is also what subprocess.run(text=True) decodes by.
    encoding = parent = _parent_encoding()
    given = input.encode(parent) if isinstance(input, str) else (input or b"")
    stdin = io.TextIOWrapper(io.BytesIO(given), encoding=encoding)
    out = io.BytesIO()
    err = io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding=encoding, write_through=True)
    stderr = io.TextIOWrapper(err, encoding=encoding, errors="backslashreplace", write_through=True)
    saved = sys.stdin, sys.stdout, sys.stderr
    code: int
    with _environment(env), _process_state("mesh", args, cwd), clock.scoped():
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = _exit_status(exc, stderr)
        except KeyboardInterrupt:
            raise  # the person running the tests pressed Ctrl-C
        except BaseException:  # what an interpreter does with an uncaught error: exit 1
            traceback.print_exc(file=stderr)
            code = 1
        finally:
            for stream in (stdout, stderr):
                stream.flush()
            sys.stdin, sys.stdout, sys.stderr = saved
    return subprocess.CompletedProcess(
        ["mesh", *args], code, _decoded(out.getvalue(), parent), _decoded(err.getvalue(), parent)
    )


def _exit_status(exc: SystemExit, stderr: io.TextIOWrapper) -> int:
    """The status a process would exit with on `exc`, as the interpreter maps it."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    stderr.write(f"{exc.code}\n")
    return 1
