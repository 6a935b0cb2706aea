"""Median latency from `send` to the wake injection, with `mesh watch` running.

Hand-run: `.venv/bin/python -m benchmarks.bench_wake [--rounds N]`. It starts a real `mesh watch`
on a throwaway mesh and sends one message per round to an agent whose session is idle:
- heimdall (the test stand-in, speaking the real protocol): time to the notice's INPUT frame and
  to the separate `\\r` frame;
- tmux (a private server; the pane runs a line reader): time until the program has read the
  submitted line (skipped when tmux is absent).
Before each round the session is left quiet for longer than `wake.idle_ms`, so the figure is the
watcher's reaction time, not the idle threshold. Results are printed and written to
`benchmarks/results/wake.json` (not tracked: figures depend on the machine).

Recorded 2026-11-23, Linux x86_64 with 2 shared CPUs, Python 3.11, 10 rounds, idle_ms 300,
enter_delay_ms 200 (medians, min-max):
- heimdall stand-in, send to notice frame: 41 ms (29-47); send to Enter frame: 242 ms (230-248)
- tmux, send to the line read by the pane's program: 247 ms (235-260)
Most of the time to Enter is the deliberate `enter_delay_ms` pause before `\r`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drasill_cli import agents, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.harness import directory_of
from tests.heimdall_standin import HeimdallStandIn
from tests.wake_support import READER, read_lines, wait_quiet, wait_until

IDLE_MS = 300
ENTER_DELAY_MS = 200
RESULTS = Path(__file__).parent / "results" / "wake.json"


def _start_watch(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "drasill_cli", "watch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if proc.stdout is None or not proc.stdout.readline():  # "start": the watcher is listening
        raise SystemExit("mesh watch did not start")
    time.sleep(0.5)  # let its start-up pass finish
    return proc


def _heimdall_rounds(mesh: Mesh, socket_dir: Path, rounds: int) -> tuple[list[float], list[float]]:
    server = HeimdallStandIn(socket_dir, "s-bench").start()
    agents.register(mesh, "hm-agent", session="s-bench", supervisor="heimdall")
    to_text, to_enter = [], []
    try:
        for n in range(rounds):
            time.sleep(IDLE_MS / 1000 + 0.2)  # past the settle time after the previous wake
            seen = len(server.typed())
            sent = time.monotonic()
            messages.send(mesh, "hm-agent", f"round {n}", sender="bench")
            inputs = server.wait_for_inputs(seen + 2, 10)[seen:]
            to_text.append(inputs[0].at - sent)
            to_enter.append(inputs[1].at - sent)
            messages.consume(mesh, "hm-agent")
    finally:
        server.stop()
    return to_text, to_enter


def _tmux_rounds(mesh: Mesh, work: Path, rounds: int) -> list[float]:
    program = work / "reader.py"
    program.write_text(READER)
    out = work / "reader.out"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", "bench", "--", sys.executable, str(program), str(out)],
        check=True,
    )
    wait_until(out.exists, 10)
    agents.register(mesh, "tmux-agent", session="bench", supervisor="tmux")
    latencies = []
    for n in range(rounds):
        wait_quiet("bench", IDLE_MS / 1000)
        seen = len(read_lines(out))
        sent = time.time()
        messages.send(mesh, "tmux-agent", f"round {n}", sender="bench")
        wait_until(lambda: len(read_lines(out)) > seen, 10)  # noqa: B023 -- used at once
        read_at = float(read_lines(out)[seen].split(" ", 1)[0])
        latencies.append(read_at - sent)
        messages.consume(mesh, "tmux-agent")
    return latencies


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def measure(rounds: int) -> dict[str, object]:
    """Run the heimdall and tmux rounds against a real `mesh watch`; the summary figures."""
    work = Path(tempfile.mkdtemp(prefix="bw", dir="/tmp"))
    socket_dir = work / "hm"
    config_file = work / "config.toml"
    config_file.write_text(
        f"[wake]\nidle_ms = {IDLE_MS}\nenter_delay_ms = {ENTER_DELAY_MS}\n"
        f'heimdall_socket_dir = "{socket_dir}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRASILL_", "TMUX"))}
    env.update(
        DRASILL_MESH_DIR=str(work / "mesh"),
        DRASILL_CONFIG=str(config_file),
        TMUX_TMPDIR=str(work),
    )
    saved = {key: os.environ.get(key) for key in ("TMUX_TMPDIR", "TMUX")}
    os.environ.update(TMUX_TMPDIR=str(work))
    os.environ.pop("TMUX", None)
    mesh = Mesh.open(work / "mesh", Config())
    directory_of(mesh).store.ensure_dir("inbox")
    watch = _start_watch(env)
    results: dict[str, object] = {
        "rounds": rounds,
        "idle_ms": IDLE_MS,
        "enter_delay_ms": ENTER_DELAY_MS,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
        "python": platform.python_version(),
    }
    try:
        to_text, to_enter = _heimdall_rounds(mesh, socket_dir, rounds)
        results["heimdall_send_to_notice"] = _summary(to_text)
        results["heimdall_send_to_enter"] = _summary(to_enter)
        if shutil.which("tmux"):
            results["tmux_send_to_line_read"] = _summary(_tmux_rounds(mesh, work, rounds))
        else:
            results["tmux_skipped"] = "tmux is not installed"
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(10)
        subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = measure(args.rounds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
