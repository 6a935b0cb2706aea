"""One agent of the PostgreSQL soak (tests/pg_soak.py), through the Python API.

Run as `python tests/pg_soak_worker.py NAME LEDGER LOCKPATH PEER...` under a simulated host
(`unshare --uts`) with $DRASILL_MESH_URL set. It registers NAME, prints `ready`, waits for a
line `go` on stdin, then until a line `stop` arrives loops: heartbeat, send one message to a
random peer, consume one, now and then claim a task and complete it, or take the write lock on
LOCKPATH for a moment. Then it drains its inbox (until a line `end`, after which it consumes
until nothing is left), prints `done` and exits 0.

Every operation that fails for any reason other than a definite answer of the mesh (a dropped
connection, exit-4 style MeshUnusable, a server shutting down) is retried after a short pause
with the same identity (the same message body, the same task), on a freshly opened Mesh. What
happened is appended, one JSON object a line, to LEDGER, which tests/pg_soak.py checks:

- `{"op": "send", "id", "to", "t0", "t1", "tries"}`: a send that returned (it succeeded);
- `{"op": "recv", "id", "t"}`: a message consumed (its body names its id and send time);
- `{"op": "claim", "task", "t"}` / `{"op": "done", "task", "t"}`: a claim won, a completion;
- `{"op": "lock", "enter", "exit"}`: the lock held from `enter` (acquire returned) to `exit`
  (written before release is called);
- `{"op": "fail", "what", "t", "error"}`: one failed attempt (retried);
- `{"op": "ok", "what", "t0", "t1"}`: any other operation that succeeded (heartbeats, etc.).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from drasill_cli import agents, locks, messages, tasks
from drasill_cli.errors import InvalidInput, NegativeOutcome, NotFound
from drasill_cli.mesh import Mesh

T = TypeVar("T")
PAUSE = 0.2  # between retries of an operation that failed on the connection
LOCK_TTL = 30.0


class Agent:
    def __init__(self, name: str, ledger: TextIO, lockpath: str, peers: list[str]) -> None:
        self.name = name
        self.ledger = ledger
        self.lockpath = lockpath
        self.peers = peers
        self.mesh: Mesh | None = None
        self.seq = 0

    def log(self, **record: Any) -> None:
        self.ledger.write(json.dumps(record) + "\n")
        self.ledger.flush()

    def _mesh(self) -> Mesh:
        if self.mesh is None:
            self.mesh = Mesh.open()
        return self.mesh

    def _drop(self) -> None:
        mesh, self.mesh = self.mesh, None
        close = getattr(mesh.backend if mesh is not None else None, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                close()

    def attempt(self, what: str, call: Callable[[Mesh], T]) -> tuple[T, int]:
        """`call` until it returns or raises a definite answer of the mesh (NegativeOutcome,
        NotFound, InvalidInput: re-raised); anything else is a fault: logged, retried."""
        tries = 0
        while True:
            tries += 1
            t0 = time.time()
            try:
                result = call(self._mesh())
            except (NegativeOutcome, NotFound, InvalidInput):
                raise
            except Exception as error:  # every other failure is a fault to retry
                self.log(op="fail", what=what, t=t0, error=f"{type(error).__name__}: {error}"[:300])
                self._drop()
                time.sleep(PAUSE * random.uniform(0.5, 1.5))
                continue
            self.log(op="ok", what=what, t0=t0, t1=time.time())
            return result, tries

    def send(self) -> None:
        self.seq += 1
        msg_id = f"{self.name}:{self.seq}"
        to = random.choice(self.peers)
        t0 = time.time()
        body = json.dumps({"id": msg_id, "sent": t0})
        _, tries = self.attempt("send", lambda m: messages.send(m, to, body, sender=self.name))
        self.log(op="send", id=msg_id, to=to, t0=t0, t1=time.time(), tries=tries)

    def consume(self) -> bool:
        found, _ = self.attempt("consume", lambda m: messages.consume(m, self.name))
        if found is None:
            return False
        body = json.loads(found["body"])
        self.log(op="recv", id=body["id"], sent=body["sent"], t=time.time())
        return True

    def work_a_task(self) -> None:
        try:
            task, _ = self.attempt("claim", lambda m: tasks.claim_next(m, self.name))
        except NegativeOutcome:
            return  # nothing claimable
        self.log(op="claim", task=task["id"], t=time.time())
        time.sleep(random.uniform(0, 0.05))
        self.log(op="finishing", task=task["id"], t=time.time())
        try:
            self.attempt("done", lambda m: tasks.done(m, task["id"], self.name))
        except (NegativeOutcome, NotFound) as error:
            # A retried completion that had committed before the connection dropped is refused
            # as "not claimed by you": done already, by us (the board shows which).
            self.log(op="done-refused", task=task["id"], t=time.time(), error=str(error)[:300])
            return
        self.log(op="done", task=task["id"], t=time.time())

    def hold_the_lock(self) -> None:
        try:
            self.attempt(
                "lock", lambda m: locks.acquire(m, [self.lockpath], self.name, ttl=LOCK_TTL)
            )
        except NegativeOutcome:
            return  # held by another: fine, try later
        enter = time.time()
        time.sleep(random.uniform(0.01, 0.05))
        self.log(op="lock", enter=enter, exit=time.time())
        # NegativeOutcome: released already by a first try that had committed.
        with contextlib.suppress(NegativeOutcome, NotFound):
            self.attempt("unlock", lambda m: locks.release(m, [self.lockpath], self.name))

    def heartbeat(self) -> None:
        self.attempt("heartbeat", lambda m: agents.heartbeat(m, self.name))


def _line(timeout: float) -> str | None:
    """A line from stdin if one arrives within `timeout` seconds."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return sys.stdin.readline().strip() if ready else None


def main(name: str, ledger_path: str, lockpath: str, peers: list[str]) -> int:
    with open(ledger_path, "a", encoding="utf-8") as ledger:
        agent = Agent(name, ledger, lockpath, peers)
        agent.attempt("register", lambda m: agents.register(m, name, pid=os.getpid()))
        print("ready", flush=True)
        while _line(60) != "go":
            pass
        while _line(0) != "stop":
            agent.heartbeat()
            agent.send()
            agent.consume()
            roll = random.random()
            if roll < 0.15:
                agent.work_a_task()
            elif roll < 0.25:
                agent.hold_the_lock()
        print("stopped", flush=True)
        while _line(0) != "end":
            if not agent.consume():
                time.sleep(0.1)
        while agent.consume():
            pass
        print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
