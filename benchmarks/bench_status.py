"""How long `mesh status` takes with 200 agents, 1,000 tasks and 100 locks (goal: under 1 s).

Run by hand: `.venv/bin/python -m benchmarks.bench_status`. It builds the mesh in a temporary
directory through the core API, then times the snapshot plus rendering in-process, and the real
`mesh status` and `mesh status --json` commands end to end (interpreter start-up included).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drasill_cli import agents, locks, messages, tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.harness import directory_of

AGENTS = 200
TASKS = 1000
LOCKS = 100
GOAL_S = 1.0


def build(root: Path) -> Mesh:
    """A mesh with AGENTS agents, TASKS tasks in every state, LOCKS locks and some mail."""
    mesh = Mesh.open(root / "mesh", Config())
    work = root / "work"
    work.mkdir()
    names = [f"agent-{i:03d}" for i in range(AGENTS)]
    for i, name in enumerate(names):
        measured = i % 4 == 0  # a quarter run as this process, so their use is measured
        agents.register(
            mesh,
            name,
            role="coder",
            tool="claude",
            pid=os.getpid() if measured else None,
            ram_gb=0.001 if measured else None,
        )
    for i in range(TASKS):
        task = tasks.add_task(mesh, f"task number {i}", actor="agent-000", priority=i % 7)
        if i % 3 == 0:
            holder = names[i % AGENTS]
            claimed = tasks.claim(mesh, holder, task["id"])
            if i % 2 == 0:
                tasks.done(mesh, claimed["id"], holder, "ok")
    for i in range(LOCKS):
        path = work / f"file-{i}.py"
        path.write_text("")
        locks.acquire(mesh, [str(path)], names[i % AGENTS])
    for i in range(100):
        messages.send(mesh, names[(i + 1) % AGENTS], f"hello {i}", sender=names[i % AGENTS])
    return mesh


def timed(label: str, func: object, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        func()  # type: ignore[operator]
        best = min(best, time.perf_counter() - began)
    verdict = "ok" if best < GOAL_S else "SLOW"
    print(f"{label:<44} {best * 1000:8.1f} ms  {verdict}")
    return best


def main() -> int:
    from rich.console import Console

    from drasill_cli import status
    from drasill_cli.cli.statusview import status_screen

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        mesh = build(Path(tmp))
        took = time.perf_counter() - began
        print(f"built {AGENTS} agents, {TASKS} tasks, {LOCKS} locks in {took:.1f} s")

        def render() -> None:
            console = Console(file=io.StringIO(), width=80, force_terminal=True)
            console.print(status_screen(status.snapshot(mesh)))

        env = {**os.environ, "DRASILL_MESH_DIR": str(directory_of(mesh).root), "COLUMNS": "80"}
        argv = [sys.executable, "-m", "drasill_cli", "status"]

        def cli(*extra: str) -> None:
            done = subprocess.run([*argv, *extra], env=env, capture_output=True, check=True)
            if extra:
                json.loads(done.stdout)

        results = [
            timed("snapshot (in-process)", lambda: status.snapshot(mesh)),
            timed("snapshot + render at 80 columns", render),
            timed("`mesh status` (whole command)", cli),
            timed("`mesh status --json` (whole command)", lambda: cli("--json")),
        ]
    return 0 if max(results) < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
