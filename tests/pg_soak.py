"""The PostgreSQL mesh under load and faults: many agent processes on simulated hosts while the
server is restarted and prune runs from "cron" on every host (issue 23).

`run(Sizes(...), workdir)` starts a DEDICATED throwaway cluster (it is restarted, so never the
shared test server), adds tasks, starts `sizes.workers` processes of tests/pg_soak_worker.py spread
over `sizes.hosts` hosts (`unshare --uts`, hostnames `soak-a`, ...), lets them send, consume,
claim, lock and heartbeat for `sizes.seconds`, restarts the server `sizes.restarts` times
(evenly spaced, down `sizes.down_for` seconds each), runs `mesh prune` on every host every
`sizes.prune_every` seconds, then stops the senders, drains every inbox and checks the
workers' ledgers and the board. The result: the violations found (empty when the mesh held)
and the figures (messages/s, latencies, restart gaps). Used by tests/test_pg_soak.py and
benchmarks/bench_soak.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from drasill_cli import tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import pg_cluster

WORKER = Path(__file__).with_name("pg_soak_worker.py")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    workers: int = 16
    hosts: int = 4
    seconds: float = 20.0
    restarts: int = 1
    down_for: float = 1.0
    prune_every: float = 5.0
    tasks_per_worker: int = 25


@dataclass
class Outcome:
    sizes: dict[str, Any]
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def unshare_refusal() -> str | None:
    """Why `unshare --uts` cannot give a process its own hostname here, or None when it can."""
    try:
        done = subprocess.run(
            ["unshare", "--uts", "sh", "-c", "hostname box-probe && hostname"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"unshare cannot run: {error}"
    if done.returncode != 0 or done.stdout.strip() != "box-probe":
        return f"unshare --uts is not permitted here: {done.stderr.strip() or done.stdout}"
    return None


def _on_host(host: str, *argv: str) -> list[str]:
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]


def _env(url: str, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DRASILL_", "HEIMDALL_", "TMUX"))
    }
    env.update(
        {
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DRASILL_MESH_URL": url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(values: list[float]) -> dict[str, Any]:
    p50, p99 = _percentile(values, 0.50), _percentile(values, 0.99)
    return {
        "count": len(values),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


class _Fleet:
    """The worker processes and their stdout lines."""

    def __init__(self, procs: dict[str, subprocess.Popen[str]]) -> None:
        self.procs = procs

    def tell(self, line: str) -> None:
        for proc in self.procs.values():
            stdin: IO[str] | None = proc.stdin
            assert stdin is not None
            stdin.write(line + "\n")
            stdin.flush()

    def expect(self, word: str, timeout: float) -> list[str]:
        """Wait until every worker printed `word`; the failures (a worker that ended or said
        something else) as lines."""
        problems: list[str] = []
        result: dict[str, str] = {}

        def read(name: str, proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            result[name] = proc.stdout.readline().strip()

        readers = [
            threading.Thread(target=read, args=(name, proc), daemon=True)
            for name, proc in self.procs.items()
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        for name in self.procs:
            got = result.get(name)
            if got != word:
                problems.append(f"{name}: expected {word!r}, got {got!r}")
        return problems

    def end(self) -> list[str]:
        problems = []
        for name, proc in self.procs.items():
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0:
                problems.append(f"{name} exited {proc.returncode}: {err[-2000:]}")
        return problems


def run(sizes: Sizes, workdir: Path) -> Outcome:
    """The soak at `sizes` in `workdir` (made; its cluster removed afterwards)."""
    outcome = Outcome(asdict(sizes))
    # Not under workdir: the server's user (postgres, when we are root) must reach it.
    base = Path(tempfile.mkdtemp(prefix="drasill-pg-soak-"))
    url = pg_cluster.start(base)
    try:
        _soak(sizes, workdir, base, url, outcome)
    finally:
        pg_cluster.stop(base)
    return outcome


def _soak(sizes: Sizes, workdir: Path, base: Path, url: str, outcome: Outcome) -> None:
    env = _env(url, workdir / "home")
    ledgers = workdir / "ledgers"
    ledgers.mkdir(parents=True, exist_ok=True)
    lockpath = _shared_file(workdir / "repo")
    hosts = [f"soak-{chr(ord('a') + i)}" for i in range(sizes.hosts)]
    names = [f"soak-w{i:03d}" for i in range(sizes.workers)]
    mesh = Mesh.open(config=Config(), mesh_url=url)
    task_ids = [
        tasks.add_task(mesh, f"soak task {i}", actor="soak-driver")["id"]
        for i in range(sizes.workers * sizes.tasks_per_worker)
    ]
    close = getattr(mesh.backend, "close", None)
    if close is not None:
        close()

    procs: dict[str, subprocess.Popen[str]] = {}
    for i, name in enumerate(names):
        peers = [peer for peer in names if peer != name]
        procs[name] = subprocess.Popen(
            _on_host(
                hosts[i % len(hosts)],
                sys.executable,
                str(WORKER),
                name,
                str(ledgers / f"{name}.jsonl"),
                lockpath,
                *peers,
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    fleet = _Fleet(procs)
    restarts: list[dict[str, float]] = []
    prunes: Counter[str] = Counter()
    prune_errors: list[str] = []
    try:
        outcome.violations += fleet.expect("ready", 120)
        if outcome.violations:
            return
        fleet.tell("go")
        began = time.time()
        stop_pruning = threading.Event()
        pruner = threading.Thread(
            target=_cron_prune,
            args=(hosts, env, sizes.prune_every, stop_pruning, prunes, prune_errors),
            daemon=True,
        )
        pruner.start()
        for i in range(sizes.restarts):
            at = began + sizes.seconds * (i + 1) / (sizes.restarts + 1)
            time.sleep(max(0.0, at - time.time()))
            restarts.append(_restart(base, sizes.down_for))
        time.sleep(max(0.0, began + sizes.seconds - time.time()))
        fleet.tell("stop")
        stopped = time.time()
        stop_pruning.set()
        pruner.join()
        outcome.violations += fleet.expect("stopped", 120)
        fleet.tell("end")
        outcome.violations += fleet.expect("done", 300)
    finally:
        outcome.violations += fleet.end()
    if prune_errors:
        outcome.violations += prune_errors
    board = {
        task["id"]: task
        for task in tasks.list_tasks(Mesh.open(config=Config(), mesh_url=url))
        if task["id"] in task_ids
    }
    records = _read_ledgers(ledgers)
    check(records, board, outcome)
    _figures(records, restarts, began, stopped, prunes, outcome)


def _shared_file(repo: Path) -> str:
    """A file in a git work tree: its lock key names the repository, so the agents of every
    host contend for it (a plain path is a different file on each host)."""
    repo.mkdir(parents=True)
    (repo / "shared.txt").write_text("one file for every host\n")
    git = ["git", "-C", str(repo), "-c", "user.name=soak", "-c", "user.email=soak@localhost"]
    for args in (["init", "-q"], ["add", "shared.txt"], ["commit", "-q", "-m", "shared"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return str(repo / "shared.txt")


def _restart(base: Path, down_for: float) -> dict[str, float]:
    """pg_cluster.restart, timed: when the stop began (`down`), when the server was stopped
    (`stopped`) and when it accepted connections again (`up`)."""
    bindir = pg_cluster.server_bindir()
    assert bindir is not None
    user = pg_cluster._server_user()
    down = time.time()
    stop = [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"]
    pg_cluster._run(stop, user)
    stopped = time.time()
    time.sleep(down_for)
    pg_cluster._start_server(base, bindir, user)
    return {"down": down, "stopped": stopped, "up": time.time()}


def _cron_prune(
    hosts: list[str],
    env: dict[str, str],
    every: float,
    stop: threading.Event,
    counts: Counter[str],
    errors: list[str],
) -> None:
    """`mesh prune --json` on every host every `every` seconds, as cron would; exit 0 or 4 (the
    server is down) is expected, anything else is a violation."""
    while not stop.wait(every):
        for host in hosts:
            done = subprocess.run(
                _on_host(host, sys.executable, "-m", "drasill_cli", "prune", "--json"),
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
            counts[f"exit {done.returncode}"] += 1
            if done.returncode not in (0, 4):
                errors.append(f"prune on {host} exited {done.returncode}: {done.stderr[-500:]}")


def _read_ledgers(folder: Path) -> dict[str, list[dict[str, Any]]]:
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        records[path.stem] = [json.loads(line) for line in lines if line]
    return records


def check(
    records: dict[str, list[dict[str, Any]]], board: dict[str, dict[str, Any]], outcome: Outcome
) -> None:
    """The workers' ledgers and the board's soak tasks against the invariants: every message
    whose send returned received exactly once, by its addressee; no task claimed by two
    workers, none left claimed; no two holds of the write lock overlapping in time."""
    v = outcome.violations
    sent: dict[str, str] = {}
    received: Counter[str] = Counter()
    receivers: dict[str, list[str]] = defaultdict(list)
    claims: dict[str, list[tuple[float, float | None, str]]] = defaultdict(list)
    locks: list[tuple[float, float, str]] = []
    for worker, entries in records.items():
        open_claims: dict[str, float] = {}
        for entry in entries:
            op = entry["op"]
            if op == "send":
                sent[entry["id"]] = entry["to"]
            elif op == "recv":
                received[entry["id"]] += 1
                receivers[entry["id"]].append(worker)
            elif op == "claim":
                open_claims[entry["task"]] = entry["t"]
            elif op == "finishing":
                start = open_claims.pop(entry["task"])
                claims[entry["task"]].append((start, entry["t"], worker))
            elif op == "lock":
                locks.append((entry["enter"], entry["exit"], worker))
        for task_id, start in open_claims.items():
            claims[task_id].append((start, None, worker))
    _check_messages(sent, received, receivers, v)
    _check_tasks(claims, board, v)
    _check_locks(locks, v)
    outcome.figures["counts"] = {
        "sent": len(sent),
        "received": sum(received.values()),
        "tasks_completed": sum(1 for t in board.values() if t["state"] == "completed"),
        "lock_holds": len(locks),
    }


def _check_messages(
    sent: dict[str, str],
    received: Counter[str],
    receivers: dict[str, list[str]],
    v: list[str],
) -> None:
    lost = sorted(set(sent) - set(received))
    if lost:
        v.append(f"{len(lost)} sent messages never received, e.g. {lost[:5]}")
    duplicated = sorted(msg for msg, count in received.items() if count > 1)
    if duplicated:
        v.append(
            f"{len(duplicated)} messages received more than once, e.g. "
            + ", ".join(f"{m} by {receivers[m]}" for m in duplicated[:5])
        )
    phantom = sorted(set(received) - set(sent))
    if phantom:
        v.append(f"{len(phantom)} messages received that no send returned for: {phantom[:5]}")
    misdelivered = [m for m in sent if m in receivers and receivers[m][0] != sent[m]]
    if misdelivered:
        v.append(f"{len(misdelivered)} messages received by another agent: {misdelivered[:5]}")


def _check_tasks(
    claims: dict[str, list[tuple[float, float | None, str]]],
    board: dict[str, dict[str, Any]],
    v: list[str],
) -> None:
    for task_id, held in claims.items():
        holders = {worker for _, _, worker in held}
        if len(holders) > 1:
            v.append(f"task {task_id} claimed by {len(holders)} workers: {sorted(held)}")
        elif len(held) > 1:
            v.append(f"task {task_id} claimed {len(held)} times by {held[0][2]}")
    for task_id, task in board.items():
        if task["state"] in ("claimed", "working"):
            v.append(
                f"task {task_id} left {task['state']} by {task.get('claimed_by')} "
                "(a claim won by a retry whose first try had committed, or a completion lost)"
            )
        elif task["state"] == "completed":
            held = claims.get(task_id, [])
            if [w for _, _, w in held] != [task.get("claimed_by")]:
                v.append(f"task {task_id} completed by {task.get('claimed_by')}, claims {held}")
        elif task_id in claims:
            v.append(f"task {task_id} is {task['state']} after claims {claims[task_id]}")


def _check_locks(locks: list[tuple[float, float, str]], v: list[str]) -> None:
    locks.sort()
    latest: tuple[float, float, str] | None = None
    overlaps = []
    for interval in locks:
        if latest is not None and interval[0] < latest[1] and interval[2] != latest[2]:
            overlaps.append((latest, interval))
        if latest is None or interval[1] > latest[1]:
            latest = interval
    if overlaps:
        v.append(f"{len(overlaps)} overlapping holds of the write lock, e.g. {overlaps[:3]}")


def _figures(
    records: dict[str, list[dict[str, Any]]],
    restarts: list[dict[str, float]],
    began: float,
    stopped: float,
    prunes: Counter[str],
    outcome: Outcome,
) -> None:
    sends = [e["t1"] - e["t0"] for r in records.values() for e in r if e["op"] == "send"]
    consumes = [
        e["t1"] - e["t0"]
        for r in records.values()
        for e in r
        if e["op"] == "ok" and e["what"] == "consume" and e["t0"] < stopped
    ]
    delivery = [e["t"] - e["sent"] for r in records.values() for e in r if e["op"] == "recv"]
    fails = Counter(
        e["error"].split(":")[0] for r in records.values() for e in r if e["op"] == "fail"
    )
    retried_sends = sum(
        1 for r in records.values() for e in r if e["op"] == "send" and e["tries"] > 1
    )
    gaps = []
    oks = sorted((e["t0"], e["t1"]) for r in records.values() for e in r if e["op"] == "ok")
    for restart in restarts:
        after = [t1 for t0, t1 in oks if t0 >= restart["stopped"]]
        first = min(after) if after else None
        gaps.append(
            {
                "server_down_s": round(restart["up"] - restart["down"], 2),
                "gap_s": None if first is None else round(first - restart["down"], 2),
            }
        )
    seconds = stopped - began
    outcome.figures.update(
        {
            "seconds": round(seconds, 1),
            "messages_per_s": round(outcome.figures["counts"]["sent"] / seconds, 1),
            "send": _ms(sends),
            "consume_call": _ms(consumes),
            "send_to_consume": _ms(delivery),
            "restarts": gaps,
            "failed_attempts": dict(fails),
            "sends_retried": retried_sends,
            "prunes": dict(prunes),
        }
    )


def main(argv: list[str]) -> int:
    """`python -m tests.pg_soak WORKERS HOSTS SECONDS RESTARTS DIR`: one run, as JSON."""
    workers, hosts, seconds, restarts = int(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    sizes = Sizes(workers=workers, hosts=hosts, seconds=seconds, restarts=restarts)
    outcome = run(sizes, Path(argv[4]).absolute())
    print(json.dumps(asdict(outcome), indent=2))
    return 1 if outcome.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
