"""`mesh send` with and without a config file, before and after pydantic validation (issue 26).

`.venv/bin/python -m benchmarks.bench_config [--before REF] [--rounds N]`

The tree at REF (default: the last commit with the hand-written config checks) and the working
tree run interleaved with this venv's interpreter (as in `bench_trees`). Three cases: no config
file; a config file that has not changed (the working tree reads its memo); a config file
edited before every call of the working tree (the memo never matches: pydantic validates).
Each call is timed by wall clock and by the CPU time (user + system) of the process, which a
busy machine inflates less. Prints medians and writes benchmarks/results/config-latest.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_trees import PY, _env, export_tree
from benchmarks.harness import REPO, compile_package, scratch

BEFORE_REF = "239bbbd"  # main before the config moved to pydantic
CONFIG = (
    'group_shared = false\n[lifecycle]\nidle_after = 60\n[budgets]\nram_gb = 8\npolicy = "warn"\n'
    '[store]\nfsync = true\n[tools.mycli]\ncommand = ["mycli", "{prompt}"]\n'
)
SEND = ["-m", "drasill_cli", "send", "bob", "hello", "--as", "alice"]


def _timed(env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one `mesh send`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*PY, *SEND], env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def _case(
    runs: dict[str, Callable[[], tuple[float, float]]], rounds: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for index in range(rounds + 2):
        for name, run in runs.items():
            took = run()
            if index >= 2:  # warm-up
                samples[name].append(took)
    return {
        name: {
            "wall_ms": round(statistics.median(w for w, _ in values) * 1000, 1),
            "cpu_ms": round(statistics.median(c for _, c in values) * 1000, 1),
        }
        for name, values in samples.items()
    }


def measure(before_ref: str, rounds: int) -> dict[str, Any]:
    compile_package()
    work = scratch("config")
    with tempfile.TemporaryDirectory(prefix="mb-config-tree-") as tmp:
        before_tree = export_tree(before_ref, Path(tmp))
        envs = {"before": _env(work, before_tree), "after": _env(work, REPO)}
        config = Path(envs["after"]["DRASILL_CONFIG"])
        for name in ("alice", "bob"):
            subprocess.run(
                [*PY, "-m", "drasill_cli", "register", name], env=envs["after"], check=True
            )
        plain: dict[str, Callable[[], tuple[float, float]]] = {
            name: functools.partial(_timed, env) for name, env in envs.items()
        }
        result: dict[str, Any] = {"before_ref": before_ref, "rounds": rounds}
        result["no config"] = _case(plain, rounds)
        config.write_text(CONFIG)
        result["config, unchanged"] = _case(plain, rounds)
        edits = iter(range(1_000_000))

        def edited() -> tuple[float, float]:
            config.write_text(f"{CONFIG}# edit {next(edits)}\n")
            return _timed(envs["after"])

        result["config, edited before each call"] = _case(
            {"before": plain["before"], "after": edited}, rounds
        )
    work.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", default=BEFORE_REF)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    result = measure(args.before, args.rounds)
    for case, trees in result.items():
        if isinstance(trees, dict):
            cells = [f"{t} {v['wall_ms']} ms wall, {v['cpu_ms']} ms CPU" for t, v in trees.items()]
            print(f"{case}: " + "; ".join(cells))
    out = REPO / "benchmarks" / "results" / "config-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
