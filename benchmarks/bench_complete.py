"""How long one shell-completion call takes, against `mesh --version` (goal: at most 1.3x).

Run by hand: `.venv/bin/python -m benchmarks.bench_complete [--rounds N]`. It builds a mesh
with 50 agents, 200 tasks and 20 locks through the core API, then times, interleaved so noise
hits all alike, the installed `mesh --version` and the completion calls a shell makes on TAB:
agent names (`mesh send <TAB>`), task ids (`mesh claim <TAB>`), held locks
(`mesh unlock <TAB>`) and command names (`mesh s<TAB>`), in the bash, zsh and fish protocols.
Prints each median and its ratio to `mesh --version`; exit 1 when a ratio is over the goal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import interleaved, median_ms, mesh_argv, run_timed
from drasill_cli import agents, locks, tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.harness import directory_of

AGENTS = 50
TASKS = 200
LOCKS = 20
GOAL = 1.3


def build(root: Path) -> Mesh:
    """A mesh with AGENTS agents, TASKS queued tasks and LOCKS locks held by agent-000."""
    mesh = Mesh.open(root / "mesh", Config())
    for index in range(AGENTS):
        agents.register(mesh, f"agent-{index:03d}")
    for index in range(TASKS):
        tasks.add_task(mesh, f"task number {index}")
    files = root / "files"
    files.mkdir()
    paths = []
    for index in range(LOCKS):
        path = files / f"file-{index}"
        path.write_text("x")
        paths.append(str(path))
    locks.acquire(mesh, paths, "agent-000")
    return mesh


def completion_env(shell: str, line: str) -> dict[str, str]:
    """What `shell`'s completion script sets before calling `mesh` back."""
    if shell == "bash":
        words = line.split()
        cword = len(words) if line.endswith(" ") else len(words) - 1
        return {"_MESH_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(cword)}
    extra = {"_MESH_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line}
    if shell == "fish":
        extra["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mb-complete-") as tmp:
        root = Path(tmp)
        mesh = build(root)
        base = {
            "DRASILL_MESH_DIR": str(directory_of(mesh).root),
            "DRASILL_CONFIG": str(root / "config.toml"),
            "DRASILL_AGENT": "agent-000",
            "PATH": "/usr/bin:/bin",
        }
        command = mesh_argv()
        calls = {"mesh --version": lambda: run_timed([*command, "--version"], env=base)}
        for shell in ("bash", "zsh", "fish"):
            for line in ("mesh send ", "mesh claim ", "mesh unlock ", "mesh s"):
                env = {**base, **completion_env(shell, line)}
                calls[f"{shell}: {line}<TAB>"] = lambda env=env: run_timed(command, env=env)  # type: ignore[misc]
        samples = interleaved(calls, options.rounds)
    floor = median_ms(samples["mesh --version"])
    print(f"{'call':<32} {'median':>9}  ratio")
    worst = 0.0
    for name, values in samples.items():
        ms = median_ms(values)
        ratio = ms / floor
        worst = max(worst, ratio)
        print(f"{name:<32} {ms:7.1f} ms  {ratio:4.2f}x")
    verdict = "met" if worst <= GOAL else "missed"
    print(
        f"goal: every completion call <= {GOAL}x `mesh --version`: {verdict} (worst {worst:.2f}x)"
    )
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
