"""Start-up of every command in an agent's working loop, beside `import typer, pydantic`.

Part of `python -m benchmarks`. Each command runs as its own process against a mesh prepared so
that every round finds the same situation (a queued task to claim, a claimed task to finish, a
task in review to approve, mail to read), interleaved round by round with the floor so the
machine's noise falls on all alike. Every command must exit 0: a refused command would be timed
on its (shorter) error path.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import PYTHON, interleaved, median_ms, mesh_argv, scratch
from drasill_cli import agents, messages, tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh

FLOOR = "python -c 'import typer, pydantic'"
WORKER = "worker"
LEAD = "lead"


def _checked(argv: list[str], env: dict[str, str]) -> float:
    """Seconds one command took; it must succeed."""
    import time

    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-6:])} exited {done.returncode}: {done.stderr!r}")
    return took


def _ids(mesh: Mesh, count: int, state: str, *, review: bool = False) -> Iterator[str]:
    """`count` tasks brought to `state` (claimed by the worker), handed out one per round."""
    made = []
    for index in range(count):
        task = tasks.add_task(mesh, f"{state} {index}", actor=LEAD, review=review)
        tasks.claim(mesh, WORKER, task["id"])
        if state == "review":
            tasks.done(mesh, task["id"], WORKER, result="done")
        made.append(task["id"])
    return iter(made)


def loop_latency(rounds: int) -> dict[str, Any]:
    """Median wall time of each loop command and its ratio to `import typer, pydantic`."""
    work = scratch("loop")
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        agents.register(mesh, WORKER, pid=os.getpid())
        agents.register(mesh, LEAD, pid=os.getpid())
        total = rounds + 4  # warm-up rounds take their share too
        for index in range(total):
            messages.send(mesh, WORKER, f"mail {index}", sender=LEAD)
        for index in range(total + 5):
            tasks.add_task(mesh, f"queued {index}", actor=LEAD)
        claimed = {name: _ids(mesh, total, "claimed") for name in ("start", "done", "fail")}
        to_release = _ids(mesh, total, "claimed")
        in_review = _ids(mesh, total, "review", review=True)
        to_reject = _ids(mesh, total, "review", review=True)
        shown = tasks.list_tasks(mesh)[0]["id"]
        env = work.env(DRASILL_AGENT=WORKER)
        target = str(work.mesh_dir.parent / "locked.txt")
        mesh_cmd = mesh_argv()

        def run(*args: str) -> Callable[[], float]:
            return lambda: _checked([*mesh_cmd, *args], env)

        def each(ids: Iterator[str], *args: str) -> Callable[[], float]:
            return lambda: _checked([*mesh_cmd, "task", args[0], next(ids), *args[1:]], env)

        def lock_pair() -> float:
            return _checked([*mesh_cmd, "lock", target], env)

        commands: dict[str, Callable[[], float]] = {
            FLOOR: lambda: _checked([PYTHON, "-c", "import typer, pydantic"], env),
            "mesh send": run("send", LEAD, "progress note"),
            "mesh inbox": run("inbox"),
            "mesh claim --next": run("claim", "--next"),
            "mesh task start ID": each(claimed["start"], "start"),
            "mesh task done ID": each(claimed["done"], "done", "--result", "ok"),
            "mesh task fail ID": each(claimed["fail"], "fail", "--result", "broke"),
            "mesh task release ID": each(to_release, "release"),
            "mesh task approve ID": each(in_review, "approve", "--as", LEAD),
            "mesh task reject ID": each(to_reject, "reject", "--note", "redo", "--as", LEAD),
            "mesh task show ID": run("task", "show", shown),
            "mesh task list": run("task", "list"),
            "mesh lock PATH": lock_pair,
            "mesh unlock PATH": run("unlock", target),
            "mesh heartbeat": run("heartbeat"),
            "mesh agents": run("agents"),
            "mesh history": run("history", "--limit", "5"),
        }
        samples = interleaved(commands, rounds)
    finally:
        work.cleanup()
    medians = {name: median_ms(values) for name, values in samples.items()}
    floor = medians[FLOOR]
    return {
        "runs_per_command": rounds,
        "floor": FLOOR,
        "median_ms": medians,
        "ratio": {name: round(ms / floor, 2) for name, ms in medians.items() if name != FLOOR},
    }
