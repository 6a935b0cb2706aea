"""The mesh on PostgreSQL, beside the directory mesh and beside Drasill, in one run.

Part of `python -m benchmarks`; run alone with `.venv/bin/python -m benchmarks.bench_postgres
[--quick] [--no-drasill]`. Starts a throwaway cluster (tests/pg_cluster.py: initdb, a private
unix socket, no TCP) with the server's durable defaults (`fsync = on`, `synchronous_commit = on`:
a commit returns once its WAL is flushed), every mesh in a schema of its own, and measures:
- `mesh send` / `mesh inbox` latency on PostgreSQL vs on a directory mesh (interleaved), with
  what the difference is made of: the driver's import (`python -X importtime -c 'import
  psycopg'`, and one process importing it) and the connect time (in-process, after the import);
- throughput of 8 Python-API sender processes on PostgreSQL vs Drasill's HTTP with 8 clients;
- consume at 10,000 unread vs at 10 on PostgreSQL (API and `mesh inbox`);
- send-to-wake across hosts: an `inbox --wait` waiter in its own UTS namespace (another
  hostname, `unshare --uts`) woken by a send from this host.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_compare import BODY, SENDERS, SINK, _threads_round, api_round
from benchmarks.bench_scale import consume_rounds
from benchmarks.drasill_baseline import DrasillServer, KeepAliveClient
from benchmarks.harness import PYTHON, interleaved, median_ms, mesh_argv, run_timed, scratch
from drasill_cli import agents, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import pg_cluster

WAITER = "waiter"
OTHER_HOST = "bench-host-b"

FULL = {
    "latency_runs": 25,
    "throughput_rounds": 3,
    "api_per_sender": 250,
    "unread_big": 10_000,
    "consume_api_rounds": 150,
    "consume_cli_rounds": 20,
    "wake_rounds": 15,
}
QUICK = {
    "latency_runs": 10,
    "throughput_rounds": 1,
    "api_per_sender": 60,
    "unread_big": 10_000,
    "consume_api_rounds": 60,
    "consume_cli_rounds": 8,
    "wake_rounds": 5,
}


# ---- the cluster and its meshes ----------------------------------------------------------------


@contextmanager
def cluster() -> Iterator[str]:
    """A durable throwaway cluster for the run; its URL."""
    if pg_cluster.server_bindir() is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    base = Path(tempfile.mkdtemp(prefix="mb-pg-"))
    try:
        yield pg_cluster.start(base, durable=True)
    finally:
        pg_cluster.stop(base)


def new_mesh_url(url: str) -> str:
    """`url` with a fresh schema of its own first on the search path (an empty mesh)."""
    schema = f"b_{uuid.uuid4().hex[:12]}"
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def open_pg(mesh_url: str) -> Mesh:
    return Mesh.open(config=Config(), mesh_url=mesh_url)


def pg_env(work_env: dict[str, str], mesh_url: str) -> dict[str, str]:
    env = {k: v for k, v in work_env.items() if k != "DRASILL_MESH_DIR"}
    env["DRASILL_MESH_URL"] = mesh_url
    return env


def _server_setting(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    return str(row[0]) if row else "?"


# ---- latency -----------------------------------------------------------------------------------


def _import_time_ms() -> dict[str, float]:
    """`python -X importtime -c 'import psycopg'`: psycopg's own cumulative import (ms, median of
    5), and its biggest sub-imports."""
    totals: list[float] = []
    parts: dict[str, list[float]] = {}
    for _ in range(5):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", "import psycopg"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if not match:
                continue
            cumulative, depth, name = int(match[2]), len(match[3]), match[4]
            if name == "psycopg" and depth == 1:
                totals.append(cumulative / 1000)
            elif depth <= 3:
                parts.setdefault(name, []).append(cumulative / 1000)
    top = sorted(((statistics.median(v), k) for k, v in parts.items()), reverse=True)[:6]
    return {"psycopg": statistics.median(totals), **{k: round(v, 1) for v, k in top}}


def _connect_ms(url: str, rounds: int = 20) -> float:
    """Median time of one `psycopg.connect` + close on the cluster's socket (driver imported)."""
    import psycopg

    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        psycopg.connect(url).close()
        samples.append(time.perf_counter() - started)
    return median_ms(samples)


def latency(url: str, rounds: int) -> dict[str, Any]:
    """`mesh send` and `mesh inbox` on PostgreSQL and on a directory mesh, interleaved."""
    work = scratch("pg-latency")
    mesh_url = new_mesh_url(url)
    try:
        directory = Mesh.open(work.mesh_dir, Config())
        database = open_pg(mesh_url)
        for mesh in (directory, database):
            agents.register(mesh, SINK, pid=os.getpid())
            for index in range(10):
                messages.send(mesh, SINK, f"spare {index}", sender="human")
        dir_env, db_env = work.env(), pg_env(work.env(), mesh_url)
        cmd = mesh_argv()
        send = [*cmd, "send", SINK, BODY, "--as", "human"]
        inbox = [*cmd, "inbox", SINK]
        commands: dict[str, Callable[[], float]] = {
            "python -c 'import drasill_cli.cli.app'": lambda: run_timed(
                [PYTHON, "-c", "import drasill_cli.cli.app"], dir_env
            ),
            "python -c 'import psycopg'": lambda: run_timed([PYTHON, "-c", "import psycopg"]),
            "mesh send (directory)": lambda: run_timed(send, dir_env),
            "mesh send (postgres)": lambda: run_timed(send, db_env),
            "mesh inbox (directory)": lambda: run_timed(inbox, dir_env),
            "mesh inbox (postgres)": lambda: run_timed(inbox, db_env),
        }
        samples = interleaved(commands, rounds)
        for mesh in (directory, database):
            left = messages.unread_count(mesh, SINK)
            if left != 10:
                raise RuntimeError(f"send/inbox rounds did not balance: {left} unread, not 10")
        database.backend.close()
    finally:
        work.cleanup()
    med = {name: median_ms(values) for name, values in samples.items()}
    return {
        "runs_per_command": rounds,
        "median_ms": med,
        "send_ratio": med["mesh send (postgres)"] / med["mesh send (directory)"],
        "inbox_ratio": med["mesh inbox (postgres)"] / med["mesh inbox (directory)"],
        "import_psycopg_ms": _import_time_ms(),
        "connect_ms": _connect_ms(mesh_url),
    }


# ---- throughput --------------------------------------------------------------------------------


def throughput(
    url: str, drasill: DrasillServer | None, rounds: int, per_sender: int
) -> dict[str, Any]:
    mesh_url = new_mesh_url(url)
    mesh = open_pg(mesh_url)
    agents.register(mesh, SINK, pid=os.getpid())
    mesh.backend.close()  # no connection of ours may cross the senders' fork
    results: dict[str, list[float]] = {"python_api_postgres": []}
    clients: list[KeepAliveClient] = []
    if drasill is not None:
        drasill.register(SINK)
        results["drasill_http"] = []

    def http_send(index: int, seq: int) -> None:
        clients[index].send(SINK, f"h{index} m{seq}", f"sender-{index}")

    for _ in range(rounds):
        results["python_api_postgres"].append(
            api_round(functools.partial(open_pg, mesh_url), per_sender)
        )
        if drasill is not None:
            # Connections made for the round: the server closes idle keep-alives after 5 s.
            clients = [KeepAliveClient(drasill.port) for _ in range(SENDERS)]
            results["drasill_http"].append(_threads_round(http_send, per_sender))
            for client in clients:
                client.close()
    mesh = open_pg(mesh_url)
    unread = messages.unread_count(mesh, SINK)
    mesh.backend.close()
    if unread != rounds * SENDERS * per_sender:
        raise RuntimeError(f"{rounds * SENDERS * per_sender} sent but {unread} arrived")
    return {
        "senders": SENDERS,
        "rounds": rounds,
        "messages_per_sender": per_sender,
        "durability": "PostgreSQL fsync = on, synchronous_commit = on (each send's commit "
        "flushed); Drasill: SQLite WAL, synchronous=NORMAL",
        "msgs_per_s": {name: statistics.median(v) for name, v in results.items()},
        "all_rounds": results,
    }


# ---- consume at scale --------------------------------------------------------------------------


def _fill(mesh: Mesh, count: int) -> None:
    for index in range(count):
        messages.send(mesh, WAITER, f"message {index}", sender="filler")


def consume(url: str, small: int, big: int, api_rounds: int, cli_rounds: int) -> dict[str, Any]:
    """Median time to consume one message with `small` vs `big` unread (refilled after each)."""
    began = time.perf_counter()
    built: dict[int, tuple[str, Mesh]] = {}
    for level in (small, big):
        mesh_url = new_mesh_url(url)
        mesh = open_pg(mesh_url)
        agents.register(mesh, WAITER, pid=os.getpid())
        _fill(mesh, level)
        built[level] = (mesh_url, mesh)
    fill_s = time.perf_counter() - began
    work = scratch("pg-consume")
    try:
        meshes = {level: mesh for level, (_url, mesh) in built.items()}
        envs = {level: pg_env(work.env(), mesh_url) for level, (mesh_url, _m) in built.items()}
        result = consume_rounds(meshes, envs, WAITER, api_rounds, cli_rounds)
    finally:
        work.cleanup()
        for _url, mesh in built.values():
            mesh.backend.close()
    return {"fill_s": fill_s, **result}


# ---- send-to-wake across hosts -----------------------------------------------------------------


def _other_host_prefix() -> tuple[list[str], str]:
    """The argv prefix that runs a command under another hostname (its own UTS namespace), and
    what it gives; without `unshare` (or the right to use it) the waiter runs on this host."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "same host (no unshare here)"
    probe = subprocess.run(
        [unshare, "--uts", "sh", "-c", f"hostname {OTHER_HOST} && hostname"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or probe.stdout.strip() != OTHER_HOST:
        return [], f"same host (unshare --uts refused: {probe.stderr.strip()[:120]})"
    script = f'hostname {OTHER_HOST} && exec "$@"'
    return [unshare, "--uts", "sh", "-c", script, "sh"], f"waiter on host {OTHER_HOST}"


def wake(url: str, rounds: int) -> dict[str, Any]:
    """From a send on this host to the waiter's `inbox --wait` printing the message, per round."""
    mesh_url = new_mesh_url(url)
    mesh = open_pg(mesh_url)
    agents.register(mesh, WAITER, pid=os.getpid())
    prefix, where = _other_host_prefix()
    work = scratch("pg-wake")
    env = pg_env(work.env(), mesh_url)
    samples: list[float] = []
    try:
        for index in range(rounds):
            waiter = subprocess.Popen(
                [*prefix, *mesh_argv(), "inbox", WAITER, "--wait", "30", "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(2.0)  # its start-up and LISTEN, well before the send
            if waiter.poll() is not None or waiter.stdout is None:
                raise RuntimeError(f"the waiter exited early: {waiter.communicate()}")
            body = f"wake {index}"
            started = time.perf_counter()
            messages.send(mesh, WAITER, body, sender="human")
            line = waiter.stdout.readline()
            took = time.perf_counter() - started
            waiter.wait(30)
            if body not in line:
                raise RuntimeError(f"the waiter printed {line!r}, not the message")
            samples.append(took)
    finally:
        mesh.backend.close()
        work.cleanup()
    return {
        "rounds": rounds,
        "where": where,
        "median_ms": median_ms(samples),
        "min_ms": min(samples) * 1000,
        "max_ms": max(samples) * 1000,
    }


# ---- the section -------------------------------------------------------------------------------


def measure(profile: dict[str, Any], drasill: DrasillServer | None) -> dict[str, Any]:
    """Every PostgreSQL figure, on one durable cluster started for the run."""
    with cluster() as url:
        figures: dict[str, Any] = {
            "server": {
                "version": _server_setting(url, "server_version"),
                "synchronous_commit": _server_setting(url, "synchronous_commit"),
                "fsync": _server_setting(url, "fsync"),
                "socket": "unix socket, same machine",
            }
        }
        steps: dict[str, Callable[[], Any]] = {
            "latency": lambda: latency(url, profile["latency_runs"]),
            "throughput": lambda: throughput(
                url, drasill, profile["throughput_rounds"], profile["api_per_sender"]
            ),
            "consume": lambda: consume(
                url,
                10,
                profile["unread_big"],
                profile["consume_api_rounds"],
                profile["consume_cli_rounds"],
            ),
            "wake": lambda: wake(url, profile["wake_rounds"]),
        }
        for name, step in steps.items():
            started = time.perf_counter()
            print(f"[postgres {name}] ...", file=sys.stderr, flush=True)
            figures[name] = step()
            print(
                f"[postgres {name}] {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return figures


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import _start_drasill, evaluate, print_postgres, print_targets_only

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_postgres", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--no-drasill", action="store_true", help="skip the Drasill baseline")
    args = parser.parse_args(argv)
    from benchmarks.harness import compile_package

    compile_package()
    results: dict[str, Any] = {}
    drasill = _start_drasill(results, args.no_drasill)
    try:
        results["postgres"] = measure(QUICK if args.quick else FULL, drasill)
    finally:
        if drasill is not None:
            drasill.stop()
    print_postgres(results)
    print_targets_only(evaluate(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
