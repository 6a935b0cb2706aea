"""The mesh beside its floors and beside the original Drasill: latency, throughput, memory.

Part of `python -m benchmarks` (see benchmarks/__main__.py); each function returns a dict of
figures. Runs of compared commands are interleaved (one of each per round), so the machine's
noise falls on all of them alike and the ratios hold even when the absolute numbers drift.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.drasill_baseline import DrasillServer, KeepAliveClient
from benchmarks.harness import (
    PYTHON,
    interleaved,
    median_ms,
    mesh_argv,
    peak_rss_kib,
    proc_status_kib,
    run_timed,
    scratch,
)
from drasill_cli import agents, messages
from drasill_cli.config import Config, StoreConfig
from drasill_cli.mesh import Mesh

SINK = "bench"
BODY = "hello from the benchmark"
SENDERS = 8


# ---- CLI latency -------------------------------------------------------------------------------


def cli_latency(drasill: DrasillServer | None, rounds: int) -> dict[str, Any]:
    """Median wall time of one process per command, interleaved round by round."""
    work = scratch("latency")
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        agents.register(mesh, SINK, pid=os.getpid())
        for index in range(10):  # `mesh inbox` always finds mail, even if a send failed
            messages.send(mesh, SINK, f"spare {index}", sender="human")
        env = work.env()
        mesh_cmd = mesh_argv()
        commands = {
            "python -I -S -c pass": lambda: run_timed([PYTHON, "-I", "-S", "-c", "pass"], env),
            "python -c 'import typer, pydantic'": lambda: run_timed(
                [PYTHON, "-c", "import typer, pydantic"], env
            ),
            "python -c 'import drasill_cli.cli.app'": lambda: run_timed(
                [PYTHON, "-c", "import drasill_cli.cli.app"], env
            ),
            "mesh send": lambda: run_timed([*mesh_cmd, "send", SINK, BODY, "--as", "human"], env),
            "mesh inbox": lambda: run_timed([*mesh_cmd, "inbox", SINK], env),
        }
        if drasill is not None:
            drasill.register(SINK)
            for index in range(10):
                drasill.request(
                    "POST",
                    f"/mesh/agents/{SINK}/inbox",
                    {"from_agent": "human", "body": f"{index}"},
                )
            send_argv = drasill.curl_send(SINK, BODY)
            consume_argv = drasill.curl_consume(SINK)
            health_argv = drasill.curl_health()
            commands.update(
                {
                    "curl --version": lambda: run_timed(["curl", "--version"]),
                    "curl GET /health": lambda: run_timed(health_argv),
                    "curl send (Drasill)": lambda: run_timed(send_argv),
                    "curl consume (Drasill)": lambda: run_timed(consume_argv),
                }
            )
        samples = interleaved(commands, rounds)
        left = messages.unread_count(mesh, SINK)
        if left != 10:
            raise RuntimeError(f"send/inbox rounds did not balance: {left} unread, expected 10")
    finally:
        work.cleanup()
    medians = {name: median_ms(values) for name, values in samples.items()}
    return {
        "runs_per_command": rounds,
        "entry_point": " ".join(mesh_cmd),
        "median_ms": medians,
        "min_ms": {name: min(values) * 1000 for name, values in samples.items()},
        "max_ms": {name: max(values) * 1000 for name, values in samples.items()},
    }


# ---- throughput --------------------------------------------------------------------------------


def _api_sender(open_mesh: Callable[[], Mesh], index: int, count: int, barrier: Any) -> None:
    mesh = open_mesh()
    # Connected before the clock starts (a database mesh connects on first use), as Drasill's
    # keep-alive clients are.
    mesh.is_registered(SINK)
    barrier.wait()
    for seq in range(count):
        messages.send(mesh, SINK, f"s{index} m{seq}", sender=f"sender-{index}")
    mesh.backend.close()


def api_round(open_mesh: Callable[[], Mesh], per_sender: int) -> float:
    """Messages per second of 8 forked processes sending through the Python API at once, each
    on the mesh `open_mesh()` gives it (opened in the child: no connection crosses the fork)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(SENDERS + 1)
    procs = [
        ctx.Process(target=_api_sender, args=(open_mesh, i, per_sender, barrier))
        for i in range(SENDERS)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.perf_counter()
    for proc in procs:
        proc.join()
    took = time.perf_counter() - started
    if any(proc.exitcode != 0 for proc in procs):
        raise RuntimeError("a Python-API sender failed")
    return SENDERS * per_sender / took


def _api_round(mesh_dir: Path, per_sender: int, *, fsync: bool = True) -> float:
    """`api_round` on a directory mesh; `fsync` is the `[store] fsync` setting of the senders."""
    config = Config(store=StoreConfig(fsync=fsync))
    return api_round(functools.partial(Mesh.open, str(mesh_dir), config), per_sender)


def _threads_round(work: Any, per_thread: int) -> float:
    """Messages per second of 8 threads, each calling `work(index)` `per_thread` times."""
    barrier = threading.Barrier(SENDERS + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            for seq in range(per_thread):
                work(index, seq)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"a concurrent sender failed: {errors[0]!r}")
    return SENDERS * per_thread / took


def throughput(
    drasill: DrasillServer | None, rounds: int, api_per_sender: int, cli_per_sender: int
) -> dict[str, Any]:
    """Messages per second with 8 concurrent senders: Python API, CLI, Drasill HTTP.

    The Python API runs twice per round: at the default durability (`[store] fsync = true`:
    a send returns once the message is on disk) and at Drasill's durability (`fsync = false`:
    atomic, survives a killed process but not a power loss, like SQLite in WAL mode with
    `synchronous = NORMAL`, which Drasill runs).
    """
    work = scratch("throughput")
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        agents.register(mesh, SINK, pid=os.getpid())
        env = work.env()
        mesh_cmd = mesh_argv()

        def cli_send(index: int, seq: int) -> None:
            subprocess.run(
                [*mesh_cmd, "send", SINK, f"c{index} m{seq}", "--as", f"sender-{index}"],
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
            )

        results: dict[str, list[float]] = {"python_api": [], "cli": [], "python_api_fsync_off": []}
        clients: list[KeepAliveClient] = []
        if drasill is not None:
            drasill.register(SINK)
            clients = [KeepAliveClient(drasill.port) for _ in range(SENDERS)]
            results["drasill_http"] = []

        def http_send(index: int, seq: int) -> None:
            clients[index].send(SINK, f"h{index} m{seq}", f"sender-{index}")

        sent = 0
        for _ in range(rounds):
            results["python_api"].append(_api_round(work.mesh_dir, api_per_sender))
            sent += SENDERS * api_per_sender
            results["python_api_fsync_off"].append(
                _api_round(work.mesh_dir, api_per_sender, fsync=False)
            )
            sent += SENDERS * api_per_sender
            if clients:
                results["drasill_http"].append(_threads_round(http_send, api_per_sender))
            results["cli"].append(_threads_round(cli_send, cli_per_sender))
            sent += SENDERS * cli_per_sender
        for client in clients:
            client.close()
        unread = messages.unread_count(mesh, SINK)
        if unread != sent:
            raise RuntimeError(f"{sent} messages sent but {unread} arrived")
    finally:
        work.cleanup()
    return {
        "senders": SENDERS,
        "rounds": rounds,
        "messages_per_sender": {"python_api": api_per_sender, "cli": cli_per_sender},
        "drasill_client": "8 Python threads, one keep-alive http.client connection each",
        "durability": {
            "python_api": "default durability ([store] fsync = true): each send is on disk "
            "when it returns (message file and its new/ shard folder flushed)",
            "python_api_fsync_off": "equal durability ([store] fsync = false): atomic, survives "
            "a killed process, may lose the last writes on power loss; the same guarantee as "
            "Drasill's SQLite in WAL mode with synchronous=NORMAL",
            "drasill_http": "SQLite WAL, synchronous=NORMAL",
            "cli": "default durability",
        },
        "msgs_per_s": {name: statistics.median(values) for name, values in results.items()},
        "all_rounds": results,
    }


# ---- memory ------------------------------------------------------------------------------------


def memory(drasill: DrasillServer | None, runs: int) -> dict[str, Any]:
    """Peak RSS of one `mesh send`; RSS of an idle `mesh watch` over 50 agents; Drasill's."""
    work = scratch("memory")
    result: dict[str, Any] = {}
    watch: subprocess.Popen[bytes] | None = None
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        env = work.env()
        for index in range(50):
            agents.register(mesh, f"agent-{index:02d}", pid=os.getpid())
        send = [*mesh_argv(), "send", "agent-00", BODY, "--as", "human"]
        floors = {
            "python -I -S -c pass": [PYTHON, "-I", "-S", "-c", "pass"],
            "python -c 'import typer, pydantic'": [PYTHON, "-c", "import typer, pydantic"],
            "mesh send": send,
        }
        peaks = {
            name: [peak_rss_kib(argv, env) for _ in range(runs)] for name, argv in floors.items()
        }
        result["peak_rss_kib"] = {name: statistics.median(v) for name, v in peaks.items()}
        watch = subprocess.Popen(
            [*mesh_argv(), "watch", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if watch.stdout is None or not watch.stdout.readline():
            raise RuntimeError("mesh watch did not start")
        time.sleep(3.0)  # its start-up pass, hardware sampling and a quiet spell
        status = proc_status_kib(watch.pid)
        result["watch_50_agents_kib"] = {"rss": status["VmRSS"], "peak": status["VmHWM"]}
    finally:
        if watch is not None:
            watch.terminate()
            watch.wait(10)
        work.cleanup()
    if drasill is not None:
        for index in range(50):
            drasill.register(f"agent-{index:02d}")
        time.sleep(2.0)
        status = proc_status_kib(drasill.pid)
        result["drasill_server_50_agents_kib"] = {"rss": status["VmRSS"], "peak": status["VmHWM"]}
    return result
