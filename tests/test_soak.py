"""The soak test: agent processes on simulated hosts (`unshare --uts`, as in test_multihost)
send, consume, claim, lock and heartbeat on one PostgreSQL mesh while its server is restarted
and `mesh prune` runs from "cron" on every host. Nothing sent for sure is lost, nothing is
consumed or claimed twice, no lock is held by two at once, and every agent carries on after
each restart.

The short version runs in CI (8 agents on 2 hosts, 15 s, one restart); the full one
(`-m slow`: 64 agents on 4 hosts, 5 minutes, two restarts; DRASILL_SOAK_SECONDS shortens it)
gives the numbers in docs/performance.md. Set DRASILL_SOAK_REPORT=FILE to keep the summary
(messages/s, latency percentiles, restart gaps) as JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import audit, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import pg_cluster
from tests.conftest import with_schema
from tests.test_multihost import _REFUSAL, _hosts, _runner

AGENT = Path(__file__).with_name("soak_agent.py")

pytestmark = pytest.mark.skipif(
    _REFUSAL is not None, reason=f"simulated hosts need `unshare --uts` (root): {_REFUSAL}"
)


@dataclasses.dataclass(frozen=True)
class Shape:
    agents: int
    hosts: int
    seconds: float
    restarts: tuple[float, ...]  # when, from the start, the server is restarted
    prune_every: float
    down_for: float = 1.0  # how long the server stays down at each restart


SHORT = Shape(agents=8, hosts=2, seconds=15, restarts=(6,), prune_every=4)
FULL = Shape(agents=64, hosts=4, seconds=300, restarts=(100, 200), prune_every=30)


def full_shape() -> Shape:
    """FULL, or as long as DRASILL_SOAK_SECONDS says (restarts at a third and two thirds)."""
    seconds = float(os.environ.get("DRASILL_SOAK_SECONDS") or FULL.seconds)
    return dataclasses.replace(FULL, seconds=seconds, restarts=(seconds / 3, 2 * seconds / 3))


@pytest.fixture
def own_cluster() -> Iterator[Path]:
    """A cluster of this test's own: it is restarted (never the shared one)."""
    if pg_cluster.server_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to restart")
    base = Path(tempfile.mkdtemp(prefix="drasill-pg-soak-"))
    try:
        pg_cluster.start(base)
        yield base
    finally:
        pg_cluster.stop(base)


class Cron:
    """`mesh prune` on one host every `every` seconds until stopped; keeps each exit code."""

    def __init__(self, host: Any, every: float) -> None:
        self.host, self.every = host, every
        self.codes: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            self.codes.append(self.host.run("prune", "--json", timeout=120).returncode)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def soak(cluster: Path, tmp: Path, shape: Shape) -> dict[str, Any]:
    """Run `shape` on the cluster under `cluster`, check it, and summarise it."""
    url = with_schema(pg_cluster.url(cluster), "soak")
    runner = _runner(url, tmp / "home")
    hosts = _hosts(runner, shape.hosts)
    Mesh.open(config=Config(), mesh_url=url).backend.close()  # tables made once, not raced
    placed = [(hosts[i % shape.hosts], f"{hosts[i % shape.hosts].name}-a{i:02d}")
              for i in range(shape.agents)]  # fmt: skip
    names = ",".join(name for _host, name in placed)
    lock_dir = tmp / "work"
    lock_dir.mkdir()
    outs = {name: tmp / f"{name}.json" for _host, name in placed}
    procs = [
        subprocess.Popen(
            host.argv(
                sys.executable,
                str(AGENT),
                name,
                names,
                str(shape.seconds),
                str(lock_dir),
                str(outs[name]),
            ),
            env=runner.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, name in placed
    ]
    mesh = Mesh.open(config=Config(), mesh_url=url)
    crons = [Cron(host, shape.prune_every) for host in hosts]
    restarts: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 120
        while len(mesh.agent_names()) < shape.agents:
            assert time.monotonic() < deadline, mesh.agent_names()
            time.sleep(0.2)
        started = time.time()
        for cron in crons:
            cron.thread.start()
        for at in shape.restarts:
            time.sleep(max(0.0, started + at - time.time()))
            down = time.time()
            pg_cluster.restart(cluster, down_for=shape.down_for)
            restarts.append((down, time.time()))
        for proc in procs:
            _, err = proc.communicate(timeout=shape.seconds + 180)
            assert proc.returncode == 0, err
    finally:
        for cron in crons:
            cron.stop.set()
        for cron in crons:
            if cron.thread.is_alive():
                cron.thread.join()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reports = [json.loads(out.read_text()) for out in outs.values()]
    left = [body for _host, name in placed for body in _drain(mesh, name)]
    deaths = {
        event["agent"]: datetime.fromisoformat(event["time"]).timestamp()
        for event in audit.read_events(mesh)
        if event["event"] == "agent-dead"
    }
    registered = set(mesh.agent_names())
    mesh.backend.close()
    return _check(shape, reports, left, registered, deaths, restarts, crons)


def _drain(mesh: Mesh, name: str) -> list[str]:
    """Every message left in `name`'s inbox, taken."""
    taken = []
    while (found := messages.consume(mesh, name)) is not None:
        taken.append(found["body"])
    return taken


def _check(
    shape: Shape,
    reports: list[dict[str, Any]],
    left: list[str],
    registered: set[str],
    deaths: dict[str, float],
    restarts: list[tuple[float, float]],
    crons: list[Cron],
) -> dict[str, Any]:
    errors = [e for r in reports for e in r["other_errors"]]
    assert not errors, errors[:10]
    sent = {body for r in reports for body in r["sent"]}
    unsure = {body for r in reports for body in r["unsure"]}
    consumed = [body for r in reports for body in r["consumed"]] + left
    twice = [body for body, n in Counter(consumed).items() if n > 1]
    assert not twice, f"consumed twice: {twice[:10]}"
    lost = sent - set(consumed)
    assert not lost, f"sent, never consumed: {sorted(lost)[:10]}"
    # A killed agent's unread mail bounces one notice (from `mesh`) to each sender: expected,
    # and only for an agent this soak killed.
    bounces = {body for body in consumed if body.startswith("bounce: ")}
    bounced = {body.split()[1] for body in bounces}
    assert bounced <= set(deaths), f"bounces for agents never killed: {bounced - set(deaths)}"
    strays = set(consumed) - sent - unsure - bounces
    assert not strays, f"consumed, never sent: {sorted(strays)[:10]}"
    for r in reports:  # an agent is found dead only once it has ended (by a later prune)
        assert deaths.get(r["name"], r["ended"]) >= r["ended"], (r["name"], deaths, r["ended"])
    finished = Counter(task for r in reports for task in r["finished"])
    assert max(finished.values(), default=1) == 1, finished.most_common(3)
    claimed = Counter(task for r in reports for task in r["claimed"])
    for task, n in claimed.items():  # claimed again only once its claimant had died unfinished
        if n > 1:
            who = [r["name"] for r in reports if task in r["claimed"]]
            unfinished = [
                r["name"] for r in reports if task in r["claimed"] and task not in r["finished"]
            ]
            assert len(unfinished) >= n - 1 and set(unfinished) <= set(deaths), (task, who)
    by_lock: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for r in reports:
        host = r["name"].rsplit("-a", 1)[0]  # a path outside a work tree is locked per host
        for path, start, end in r["held"]:
            by_lock.setdefault((host, path), []).append((start, end, r["name"]))
    for key, spans in by_lock.items():
        spans.sort()
        for (_s1, end1, who1), (start2, _e2, who2) in itertools.pairwise(spans):
            assert start2 > end1, f"{key} held by {who1} and {who2} at once"
    assert registered >= {r["name"] for r in reports}, "prune removed a live agent"
    gaps = []
    for down, back in restarts:
        after = [min((t for t in r["successes"] if t > back), default=None) for r in reports]
        assert None not in after, "an agent never carried on after a restart"
        gaps.append(
            {
                "server_down_s": round(back - down, 2),
                "every_agent_back_s": round(max(t for t in after if t is not None) - down, 2),
            }
        )
    latency = {
        kind: {
            "p50_ms": round(_percentile(values, 0.5), 1),
            "p99_ms": round(_percentile(values, 0.99), 1),
            "count": len(values),
        }
        for kind in ("send", "consume", "claim", "lock", "unlock", "heartbeat")
        if (values := [v for r in reports for v in r["latency"].get(kind, [])])
    }
    summary = {
        "agents": shape.agents,
        "hosts": shape.hosts,
        "seconds": shape.seconds,
        "messages_sent": len(sent),
        "messages_per_s": round(len(sent) / shape.seconds, 1),
        "sends_unsure": len(unsure),
        "tasks_claimed": len(claimed),
        "locks_held": sum(len(spans) for spans in by_lock.values()),
        "failed_ops": sum(len(r["failures"]) for r in reports),
        "failed_ops_outside_restarts": sum(  # from 1 s before a restart to 5 s after it
            1
            for r in reports
            for t in r["failures"]
            if not any(down - 1 <= t <= back + 5 for down, back in restarts)
        ),
        "prunes": {"runs": sum(len(c.codes) for c in crons),
                   "exit_codes": dict(Counter(code for c in crons for code in c.codes))},
        "latency": latency,
        "restarts": gaps,
    }  # fmt: skip
    assert all(code in (0, 4) for c in crons for code in c.codes), summary["prunes"]
    where = os.environ.get("DRASILL_SOAK_REPORT")
    if where:
        Path(where).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def test_a_short_soak_loses_nothing_across_a_restart(own_cluster: Path, tmp_path: Path) -> None:
    summary = soak(own_cluster, tmp_path, SHORT)
    assert summary["messages_sent"] > 0 and summary["tasks_claimed"] > 0, summary
    assert summary["locks_held"] > 0, summary


@pytest.mark.slow
def test_64_agents_on_4_hosts_for_5_minutes_with_two_restarts(
    own_cluster: Path, tmp_path: Path
) -> None:
    summary = soak(own_cluster, tmp_path, full_shape())
    assert summary["messages_sent"] > 0, summary
