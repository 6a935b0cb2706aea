"""Two source trees of drasill_cli in one run: did a change cost anything?

`.venv/bin/python -m benchmarks.bench_trees [--before REF] [--rounds N]`

The tree at REF (default: the last commit before the storage boundary) is exported with
`git archive` into a scratch folder and compiled, like the working tree. Both run with this
venv's interpreter and dependencies; `PYTHONPATH` picks the tree. Each tree is measured as two
separate entries ("before #1", "before #2", ...) interleaved round by round, so the difference
between the two entries of one tree is the noise of this machine right now, and a change is
"within the noise" when the before/after difference is no larger than that.

Measured: `mesh send` and `mesh inbox` latency (one process per call, median), and Python-API
throughput of 8 sender processes (messages per second, median of rounds).
Prints a table and writes benchmarks/results/trees-latest.json.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import PYTHON, REPO, interleaved, median_ms, run_timed, scratch

BEFORE_REF = "56ef8b5"  # main before the storage boundary (issue 14)
SENDERS = 8
SINK = "bench"

_SETUP = """
import os, sys
from drasill_cli import agents, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
mesh = Mesh.open(sys.argv[1], Config())
agents.register(mesh, "bench", pid=os.getpid())
for i in range(int(sys.argv[2])):
    messages.send(mesh, "bench", f"spare {i}", sender="human")
"""

_THROUGHPUT = """
import multiprocessing, sys, time
from drasill_cli import messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh

def sender(mesh_dir, index, count, barrier):
    mesh = Mesh.open(mesh_dir, Config())
    barrier.wait()
    for seq in range(count):
        messages.send(mesh, "bench", f"s{index} m{seq}", sender=f"sender-{index}")

if __name__ == "__main__":
    mesh_dir, senders, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(senders + 1)
    procs = [ctx.Process(target=sender, args=(mesh_dir, i, count, barrier)) for i in range(senders)]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.perf_counter()
    for proc in procs:
        proc.join()
    took = time.perf_counter() - started
    if any(proc.exitcode != 0 for proc in procs):
        sys.exit("a sender failed")
    print(senders * count / took)
"""


def export_tree(ref: str, into: Path) -> Path:
    """The drasill_cli package of `ref`, exported and compiled under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "drasill_cli"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    compileall.compile_dir(str(into / "drasill_cli"), quiet=1)
    return into


# `-S`: no site processing, so the venv's editable-install hook cannot pick /work/main's tree;
# the venv's site-packages come on PYTHONPATH after the tree instead (both trees alike).
PY = [PYTHON, "-S"]
SITE_PACKAGES = next(p for p in sys.path if p.endswith("site-packages"))


def _env(work: Any, tree: Path) -> dict[str, str]:
    # PYTHONSAFEPATH: the current folder (this repository, when run from it) is not searched.
    env: dict[str, str] = work.env(PYTHONPATH=f"{tree}:{SITE_PACKAGES}", PYTHONSAFEPATH="1")
    return env


def _which(env: dict[str, str]) -> str:
    return subprocess.run(
        [*PY, "-c", "import drasill_cli; print(drasill_cli.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def measure(before_ref: str, rounds: int, tp_rounds: int, per_sender: int) -> dict[str, Any]:
    compileall.compile_dir(str(REPO / "drasill_cli"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="mb-trees-") as tmp:
        trees = {"before": export_tree(before_ref, Path(tmp)), "after": REPO}
        works = {name: scratch(f"trees-{name}") for name in trees}
        try:
            envs = {name: _env(works[name], tree) for name, tree in trees.items()}
            for name, env in envs.items():
                where = _which(env)
                if not where.startswith(str(trees[name])):
                    raise RuntimeError(f"{name} tree not picked: drasill_cli from {where}")
                subprocess.run(
                    [*PY, "-c", _SETUP, str(works[name].mesh_dir), "10"], env=env, check=True
                )
            mesh = [*PY, "-m", "drasill_cli"]
            commands: dict[str, Callable[[], float]] = {}
            for copy in (1, 2):
                for name, env in envs.items():
                    commands[f"mesh send, {name} #{copy}"] = functools.partial(
                        run_timed, [*mesh, "send", SINK, "hello", "--as", "human"], env
                    )
                    commands[f"mesh inbox, {name} #{copy}"] = functools.partial(
                        run_timed, [*mesh, "inbox", SINK], env
                    )
            latency = {k: median_ms(v) for k, v in interleaved(commands, rounds).items()}
            throughput: dict[str, list[float]] = {}
            for _ in range(tp_rounds):
                for copy in (1, 2):
                    for name, env in envs.items():
                        out = subprocess.run(
                            [
                                *PY,
                                "-c",
                                _THROUGHPUT,
                                str(works[name].mesh_dir),
                                str(SENDERS),
                                str(per_sender),
                            ],
                            env=env,
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout
                        throughput.setdefault(f"API msgs/s, {name} #{copy}", []).append(float(out))
        finally:
            for work in works.values():
                work.cleanup()
    return {
        "before": before_ref,
        "rounds": rounds,
        "throughput_rounds": tp_rounds,
        "latency_ms": latency,
        "throughput": {k: statistics.median(v) for k, v in throughput.items()},
    }


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """For each figure: the before/after change beside the noise (the larger of the two
    same-tree differences), in percent of the before figure."""
    rows = []
    figures = [(f"mesh {c}", result["latency_ms"], f"mesh {c}") for c in ("send", "inbox")]
    figures.append(("API throughput", result["throughput"], "API msgs/s"))
    for label, table, prefix in figures:
        before = [table[f"{prefix}, before #{i}"] for i in (1, 2)]
        after = [table[f"{prefix}, after #{i}"] for i in (1, 2)]
        base = statistics.mean(before)
        noise = max(abs(before[0] - before[1]), abs(after[0] - after[1])) / base * 100
        change = (statistics.mean(after) - base) / base * 100
        rows.append(
            {
                "figure": label,
                "before": before,
                "after": after,
                "change_pct": change,
                "noise_pct": noise,
                "within_noise": abs(change) <= noise,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE_REF)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--per-sender", type=int, default=250)
    args = parser.parse_args(argv)
    result = measure(args.before, args.rounds, args.throughput_rounds, args.per_sender)
    result["verdicts"] = verdicts(result)
    print(f"{'figure':<16} {'before #1/#2':>20} {'after #1/#2':>20} {'change':>8} {'noise':>7}")
    for row in result["verdicts"]:
        fmt = "{:.1f}/{:.1f}" if row["figure"].startswith("mesh") else "{:.0f}/{:.0f}"
        print(
            f"{row['figure']:<16} {fmt.format(*row['before']):>20} "
            f"{fmt.format(*row['after']):>20} {row['change_pct']:>+7.1f}% "
            f"{row['noise_pct']:>6.1f}%  {'within noise' if row['within_noise'] else 'OUTSIDE'}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "trees-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
