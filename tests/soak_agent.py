"""One agent of the soak test (tests/test_soak.py), through the Python API.

Run as `python tests/soak_agent.py NAME PEERS SECONDS LOCKDIR OUT` with $DRASILL_MESH_URL set
(under `unshare --uts`, so its host is the simulated one). It registers NAME, then until
SECONDS have passed, round after round: beats its heartbeat, sends one message to a random
peer (PEERS: the names, comma-separated), consumes its inbox, adds a task and claims and
finishes the next one, and takes a write lock on one of three paths in LOCKDIR, holds it a
moment and releases it. A failure that leaves the mesh unusable (exit 4: the server is
restarting) is counted and the round goes on. It writes OUT: one JSON object with what it
sent (sure, or unsure: the send failed and may have landed), consumed, claimed and finished
(done for sure), the intervals it held each lock (wall clock, shared by every simulated
host), the latency of each kind of operation, the times of its failures and successes, and
when it ended.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from drasill_cli import agents, locks, messages, tasks
from drasill_cli.errors import MeshError, NegativeOutcome, NotFound
from drasill_cli.mesh import Mesh

T = TypeVar("T")
PAUSE_S = 0.2  # between rounds: a steady load rather than a saturated server
HOLD_S = 0.02


class Agent:
    def __init__(self, name: str, peers: list[str], lock_dir: Path) -> None:
        self.name = name
        self.peers = [p for p in peers if p != name]
        self.paths = [str(lock_dir / f"file-{i}") for i in range(3)]
        self.mesh = Mesh.open()
        self.seq = 0
        self.sent: list[str] = []
        self.unsure: list[str] = []
        self.consumed: list[str] = []
        self.claimed: list[str] = []
        self.finished: list[str] = []  # claimed, then done for sure
        self.ended = 0.0
        self.held: list[list[Any]] = []  # [path, start, end]
        self.latency: dict[str, list[float]] = {}
        self.failures: list[float] = []
        self.successes: list[float] = []
        self.other_errors: list[str] = []

    def timed(self, kind: str, call: Callable[[], T]) -> T:
        started = time.monotonic()
        result = call()
        self.latency.setdefault(kind, []).append((time.monotonic() - started) * 1000)
        self.successes.append(time.time())
        return result

    def round(self) -> None:
        mesh, name = self.mesh, self.name
        self.timed("heartbeat", lambda: agents.heartbeat(mesh, name))
        self.seq += 1
        body = f"{name}:{self.seq}"
        try:
            peer = random.choice(self.peers)
            self.timed("send", lambda: messages.send(mesh, peer, body, sender=name, wake=False))
            self.sent.append(body)
        except MeshError as exc:
            if exc.exit_code == 4:
                self.unsure.append(body)
            raise
        for _ in range(5):
            found = self.timed("consume", lambda: messages.consume(mesh, name))
            if found is None:
                break
            self.consumed.append(found["body"])
        self.timed("task-add", lambda: tasks.add_task(mesh, f"job of {body}", actor=name))
        try:
            task = self.timed("claim", lambda: tasks.claim_next(mesh, name))
        except NegativeOutcome:
            task = None
        if task is not None:
            self.claimed.append(task["id"])
            self.timed("done", lambda: tasks.done(mesh, task["id"], name))
            self.finished.append(task["id"])
        self.lock_once()

    def lock_once(self) -> None:
        path = random.choice(self.paths)
        try:
            self.timed("lock", lambda: locks.acquire(self.mesh, [path], self.name, ttl=30))
        except NegativeOutcome:
            return  # another holds it
        start = time.time()
        time.sleep(HOLD_S)
        while True:  # released for sure before the round goes on (a restart may be under way)
            end = time.time()
            try:
                self.timed("unlock", lambda: locks.release(self.mesh, [path], self.name))
                break
            except NotFound:
                break  # an earlier try released it and its answer was lost
            except MeshError as exc:
                if exc.exit_code != 4:
                    raise
                self.failures.append(time.time())
                time.sleep(0.1)
        self.held.append([path, start, end])

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.round()
            except MeshError as exc:
                if exc.exit_code != 4:
                    self.other_errors.append(f"{exc.code}: {exc.message}")
                self.failures.append(time.time())
                time.sleep(0.1)
                continue
            time.sleep(PAUSE_S)
        self.ended = time.time()

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sent": self.sent,
            "unsure": self.unsure,
            "consumed": self.consumed,
            "claimed": self.claimed,
            "finished": self.finished,
            "ended": self.ended,
            "held": self.held,
            "latency": self.latency,
            "failures": self.failures,
            "successes": self.successes,
            "other_errors": self.other_errors,
        }


def main(name: str, peers: str, seconds: float, lock_dir: str, out: str) -> int:
    agent = Agent(name, peers.split(","), Path(lock_dir))
    agents.register(agent.mesh, name, pid=os.getpid())
    deadline = time.monotonic() + 120
    while not set(agent.peers) <= set(agent.mesh.agent_names()):  # everyone registered
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the other agents never registered")
        time.sleep(0.2)
    try:
        agent.run(seconds)
    finally:
        Path(out).write_text(json.dumps(agent.report()))
        agent.mesh.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]))
