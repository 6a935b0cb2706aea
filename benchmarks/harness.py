"""Shared pieces of the benchmarks: scratch meshes, process timing, medians, peak RSS.

Every figure is measured, never assumed: a section that cannot run records why and shows
"skipped" in the table instead of a number.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
# How users run the CLI: the console script pip installs next to the interpreter.
MESH = str(VENV_BIN / "mesh")
REPO = Path(__file__).resolve().parent.parent


def compile_package() -> None:
    """Write the bytecode of drasill_cli, as `pip install` does for users: with an editable
    install and PYTHONDONTWRITEBYTECODE=1 every `mesh` call would compile its sources anew."""
    import compileall

    compileall.compile_dir(str(REPO / "drasill_cli"), quiet=1)


def mesh_argv() -> list[str]:
    """The `mesh` command line: the installed entry point, or `python -m` when it is absent."""
    if os.access(MESH, os.X_OK):
        return [MESH]
    return [PYTHON, "-m", "drasill_cli"]


@dataclass
class Scratch:
    """A throwaway directory holding a mesh and an empty config, with the env that uses it."""

    root: Path

    @property
    def mesh_dir(self) -> Path:
        return self.root / "mesh"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DRASILL_", "HEIMDALL_", "TMUX"))
        }
        env.update(
            DRASILL_MESH_DIR=str(self.mesh_dir),
            DRASILL_CONFIG=str(self.root / "config.toml"),
            XDG_DATA_HOME=str(self.root / "data"),
            XDG_CONFIG_HOME=str(self.root / "config"),
            XDG_CACHE_HOME=str(self.root / "cache"),  # the config memo stays in the scratch
        )
        env.update(extra)
        return env

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def scratch(prefix: str) -> Scratch:
    """A new scratch directory under the system temp dir (a real disk file system here)."""
    return Scratch(Path(tempfile.mkdtemp(prefix=f"mb-{prefix}-")))


def run_timed(argv: Sequence[str], env: dict[str, str] | None = None, stdin: bytes = b"") -> float:
    """Seconds one process takes from spawn to exit; a non-zero exit is an error."""
    started = time.perf_counter()
    done = subprocess.run(
        list(argv),
        input=stdin,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return took


def interleaved(
    commands: dict[str, Callable[[], float]], rounds: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Run every command once per round, in turn, so noise hits all of them alike.

    Each callable returns the seconds it measured. Warm-up rounds are discarded.
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for index in range(warmup + rounds):
        for name, func in commands.items():
            took = func()
            if index >= warmup:
                samples[name].append(took)
    return samples


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


# Spawns the measured command from a small interpreter with fork+exec and reports the child's
# ru_maxrss. Measured from this (large) process instead, the figure would be wrong: a vfork-style
# spawn makes the kernel charge the parent's high-water mark to the child at exec.
_RSS_PROBE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvpe(sys.argv[1], sys.argv[1:], os.environ)
_pid, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def peak_rss_kib(argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Peak resident set size of one process (KiB), from the kernel's rusage of that child."""
    done = subprocess.run(
        [PYTHON, "-I", "-S", "-c", _RSS_PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        maxrss, code = (int(x) for x in done.stdout.split()[-2:])
    except ValueError:
        raise RuntimeError(f"the RSS probe failed: {done.stderr[-300:]}") from None
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {done.stderr[-300:]}")
    return maxrss


def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a running process, from /proc/PID/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process plus its descendants (a server with worker children)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += proc_status_kib(current).get("VmRSS", 0)
            with open(f"/proc/{current}/task/{current}/children", encoding="ascii") as handle:
                pending += [int(child) for child in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
