"""Issue 3's inbox numbers: consuming one message with 10 vs 10,000 unread, and `--wait` latency.

Run with `.venv/bin/python -m benchmarks.bench_inbox`. The acceptance bar is a consume ratio
(10,000 unread over 10 unread) of at most 3, for the Python API and for the `mesh inbox` command;
`mesh inbox --wait` should return within 0.5 s of a send from another process. Results are
printed and written to `benchmarks/results/inbox.json` (not tracked: figures depend on the machine).

Recorded 2026-11-23, Linux x86_64 with 2 shared CPUs, Python 3.11, ext4 (medians):
- `messages.consume`: 0.458 ms with 10 unread, 0.482 ms with 10,000 (1.05x);
- `mesh inbox --json` as a process: 111.9 ms with 10, 110.4 ms with 10,000 (0.99x);
- send to `mesh inbox --wait 10` printing it: 15 ms (11-20 over 5 rounds).
The ratio stays flat because `new/` is sharded by time: the next message is found by listing a
few small folders, never all 10,000 names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drasill_cli import messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.harness import directory_of

AGENT = "bench"


RESULTS = Path(__file__).parent / "results" / "inbox.json"


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise RuntimeError(problem)


def fill(mesh: Mesh, count: int) -> None:
    """Top the inbox up to `count` unread messages."""
    for index in range(count - messages.unread_count(mesh, AGENT)):
        messages.send(mesh, AGENT, f"message {index}", sender="filler")


def api_consume(mesh: Mesh, rounds: int) -> float:
    """Median seconds of one `messages.consume`, the level kept constant by untimed refills."""
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        taken = messages.consume(mesh, AGENT)
        samples.append(time.perf_counter() - started)
        _check(taken is not None, "the inbox ran dry during the measurement")
        messages.send(mesh, AGENT, f"refill {index}", sender="filler")
    return statistics.median(samples)


def cli_consume(mesh: Mesh, env: dict[str, str], rounds: int) -> float:
    """Median seconds of one `mesh inbox --json` process, start-up included."""
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "drasill_cli", "inbox", AGENT, "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        samples.append(time.perf_counter() - started)
        messages.send(mesh, AGENT, f"refill {index}", sender="filler")
    return statistics.median(samples)


def wait_latency(mesh: Mesh, env: dict[str, str], rounds: int) -> list[float]:
    """Seconds from a send (this process) to `mesh inbox --wait 10` printing it (another)."""
    waiter = "waiter"
    directory_of(mesh).store.write(f"agents/{waiter}.json", {"name": waiter})
    latencies = []
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-m", "drasill_cli", "inbox", waiter, "--wait", "10", "--json"],
            env=env,
            stdout=subprocess.PIPE,
        )
        time.sleep(1.0)  # started and blocked on its watcher
        _check(proc.poll() is None and proc.stdout is not None, "the waiter returned early")
        assert proc.stdout is not None  # noqa: S101 -- narrows the type for mypy
        started = time.perf_counter()
        messages.send(mesh, waiter, "wake up", sender="bench")
        line = proc.stdout.readline()
        latencies.append(time.perf_counter() - started)
        proc.wait(timeout=10)
        _check(line.startswith(b"{"), f"the waiter printed {line!r}")
    return latencies


def main() -> None:
    """Measure and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cli-rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "mesh"
        mesh = Mesh.open(root, Config())
        directory_of(mesh).store.write(f"agents/{AGENT}.json", {"name": AGENT})
        env = {
            **os.environ,
            "DRASILL_MESH_DIR": str(root),
            "DRASILL_CONFIG": str(Path(scratch) / "none.toml"),
        }
        env.pop("DRASILL_AGENT", None)
        results = {}
        for level in (args.small, args.big):
            started = time.perf_counter()
            fill(mesh, level)
            print(f"filled {level} unread in {time.perf_counter() - started:.1f}s", flush=True)
            results[level] = (
                api_consume(mesh, args.rounds),
                cli_consume(mesh, env, args.cli_rounds),
            )
        small_api, small_cli = results[args.small]
        big_api, big_cli = results[args.big]
        print(f"consume via API   {args.small:>6} unread: {small_api * 1e3:8.3f} ms (median)")
        print(f"consume via API   {args.big:>6} unread: {big_api * 1e3:8.3f} ms (median)")
        print(f"consume via `mesh inbox` {args.small:>6}: {small_cli * 1e3:8.1f} ms (median)")
        print(f"consume via `mesh inbox` {args.big:>6}: {big_cli * 1e3:8.1f} ms (median)")
        print(f"ratio API {big_api / small_api:.2f}x, CLI {big_cli / small_cli:.2f}x (bar: <= 3x)")
        latencies = wait_latency(mesh, env, 5)
        shown = ", ".join(f"{x * 1e3:.0f}" for x in latencies)
        print(
            f"inbox --wait latency: median {statistics.median(latencies) * 1e3:.0f} ms, "
            f"max {max(latencies) * 1e3:.0f} ms ({shown}) (bar: < 500 ms)"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
                "consume_api_ms": {args.small: small_api * 1e3, args.big: big_api * 1e3},
                "consume_cli_ms": {args.small: small_cli * 1e3, args.big: big_cli * 1e3},
                "consume_ratio_api": big_api / small_api,
                "consume_ratio_cli": big_cli / small_cli,
                "wait_latency_ms": [x * 1e3 for x in latencies],
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
