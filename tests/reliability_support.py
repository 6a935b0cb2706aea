"""The kill storm for the reliability suite: forked workers doing mesh operations, SIGKILLed.

Each worker is a fork of the test process (the mesh modules are imported once, so a restart
costs a fork, not an interpreter start-up) that loops over one kind of operation through the
Python API and appends one journal line after each operation returns. A journal line is
written with one write(2) on an O_APPEND file, so a kill never leaves half a line; an operation
killed before its line is written counts as not completed. The parent kills a random worker at
random instants, reaps it (so its pid is really gone) and starts a new one in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drasill_cli import agents, lifecycle, locks, messages, tasks
from drasill_cli.config import Config
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh
from tests.harness import directory_of

RECEIVER = "rcv"
ROLES = ("send", "send", "consume", "claim", "claim", "lock", "lock", "prune")
JOURNALED = ("send", "consume", "claim", "lock")  # roles whose journal `<role>-N.log` shows work
WORK_CAP_S = 120.0  # how long a storm may go on past its kills for every role to do some work
LOCK_LEASE_S = 60.0  # long: during the storm only a holder's death frees its locks
LOCK_MODES = ("write", "read", "co_write", "intent")


def journal(folder: Path, name: str, *fields: object) -> None:
    """Append one line (fields joined by tabs) with a single write(2)."""
    line = "\t".join(str(f) for f in fields) + "\n"
    fd = os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_journal(folder: Path, prefix: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in sorted(folder.glob(f"{prefix}*.log")):
        rows += [line.split("\t") for line in path.read_text().splitlines()]
    return rows


# ---- workers (run in forked children, never return) ------------------------------------------


def _send(mesh: Mesh, log: Path, slot: int, rng: random.Random) -> None:
    token = f"{os.getpid()}-{rng.getrandbits(40):x}"
    seq = 0
    while True:
        seq += 1
        body = f"{token}-{seq}"
        priority = "urgent" if rng.random() < 0.2 else "normal"
        sent = messages.send(mesh, RECEIVER, body, sender=f"snd{slot}", priority=priority)
        journal(log, f"send-{slot}.log", sent[0]["id"], body)


def _consume(mesh: Mesh, log: Path, slot: int, rng: random.Random) -> None:
    while True:
        message = messages.consume(mesh, RECEIVER)
        if message is None:
            time.sleep(rng.uniform(0, 0.005))
            continue
        journal(log, f"consume-{slot}.log", message["id"], message["body"])


def _claim(mesh: Mesh, log: Path, slot: int, rng: random.Random) -> None:
    actor = f"cl{slot}x{os.getpid()}"
    # Alive as long as the test (its parent): killed mid-claim, its claims are never requeued.
    agents.register(mesh, actor, pid=os.getppid(), replace=True)
    while True:
        try:
            task = tasks.claim_next(mesh, actor)
        except NegativeOutcome:
            time.sleep(rng.uniform(0, 0.005))
            continue
        journal(log, f"claim-{slot}.log", "claim", task["id"], actor)
        if rng.random() < 0.5:
            tasks.done(mesh, task["id"], actor, "ok")
            journal(log, f"claim-{slot}.log", "done", task["id"], actor)


def _lock(mesh: Mesh, log: Path, slot: int, rng: random.Random, paths: list[str]) -> None:
    name = f"lk{slot}"
    agents.register(mesh, name, pid=os.getpid(), replace=True)
    while True:
        path = rng.choice(paths)
        mode = rng.choice(LOCK_MODES)
        try:
            locks.acquire(mesh, [path], name, mode=mode, ttl=LOCK_LEASE_S)
        except NegativeOutcome:
            continue
        journal(log, f"lock-{slot}.log", "lock", path, mode, os.getpid(), time.time())
        time.sleep(rng.uniform(0, 0.003))
        journal(log, f"lock-{slot}.log", "unlock-start", path, mode, os.getpid(), time.time())
        locks.release(mesh, [path], name)


def _prune(mesh: Mesh, log: Path, slot: int, rng: random.Random) -> None:
    del log, slot
    while True:
        lifecycle.prune(mesh)
        time.sleep(rng.uniform(0, 0.01))


def open_mesh(location: Path | str) -> Mesh:
    """The mesh at `location`: a directory, or a PostgreSQL URL."""
    if isinstance(location, Path):
        return Mesh.open(location, Config())
    return Mesh.open(config=Config(), mesh_url=location)


def _child(role: str, slot: int, location: Path | str, log: Path, paths: list[str]) -> None:
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        rng = random.Random(os.getpid() ^ time.time_ns())
        mesh = open_mesh(location)
        if role == "lock":
            _lock(mesh, log, slot, rng, paths)
        else:
            {"send": _send, "consume": _consume, "claim": _claim, "prune": _prune}[role](
                mesh, log, slot, rng
            )
    except BaseException:
        with contextlib.suppress(BaseException):
            journal(log, f"errors-{role}.log", json.dumps(traceback.format_exc()))
        code = 3
    finally:
        os._exit(code)


# ---- the storm ------------------------------------------------------------------------------


@dataclass
class Storm:
    """Fork workers, kill them at random, record when each pid died. `location` is the mesh:
    a directory, or a PostgreSQL URL (each worker opens its own connection after the fork)."""

    location: Path | str
    log: Path
    paths: list[str]
    seed: int
    kills: int = 0
    deaths: dict[int, float] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    workers: dict[int, tuple[str, int]] = field(default_factory=dict)

    def spawn(self, slot: int) -> None:
        role = ROLES[slot]
        pid = os.fork()
        if pid == 0:
            _child(role, slot, self.location, self.log, self.paths)
        self.workers[slot] = (role, pid)

    def _reap_exited(self) -> None:
        for slot, (role, pid) in list(self.workers.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.deaths[pid] = time.time()
                self.unexpected_exits.append(f"{role} worker {pid} exited with status {status}")
                self.spawn(slot)

    def kill(self, slot: int) -> None:
        _role, pid = self.workers[slot]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.deaths[pid] = time.time()  # the holder's pid is gone from here on
        self.kills += 1

    def idle_roles(self) -> set[str]:
        """Journaled roles with no completed operation yet (a journal line is written whole)."""
        return {
            role
            for role in JOURNALED
            if not any(path.stat().st_size for path in self.log.glob(f"{role}-*.log"))
        }

    def run(self, kills: int, max_gap_s: float = 0.04, work_cap_s: float = WORK_CAP_S) -> None:
        """Kill `kills` times; then go on until every journaled role has done some work.

        On a slow disk a role may not finish one operation between kills. Past the kill count,
        such a role's workers are no longer killed (the others still are) until it has done
        something, for at most `work_cap_s` seconds; the checks then see real work, not none.
        """
        rng = random.Random(self.seed)
        for slot in range(len(ROLES)):
            self.spawn(slot)
        cap: float | None = None
        try:
            while True:
                idle: set[str] = set()
                if self.kills >= kills:
                    idle = self.idle_roles()
                    cap = time.monotonic() + work_cap_s if cap is None else cap
                    if not idle or time.monotonic() >= cap:
                        break
                time.sleep(rng.uniform(0.001, max_gap_s))
                self._reap_exited()
                slot = rng.randrange(len(ROLES))
                if ROLES[slot] in idle:
                    continue
                self.kill(slot)
                self.spawn(slot)
        finally:
            for slot in list(self.workers):
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    self.kill(slot)
            self.workers.clear()


def lock_intervals(log: Path, deaths: dict[int, float]) -> list[tuple[str, str, int, float, float]]:
    """(path, mode, holder pid, from, to) spans during which each lock was surely held.

    From the journal line written after the grant to the line written before the release, or
    to the holder's death when it was killed holding it. A lock worker holds one lock at a
    time, so each worker's journal alternates lock / unlock-start.
    """
    spans: list[tuple[str, str, int, float, float]] = []
    for path in sorted(log.glob("lock-*.log")):
        held: tuple[str, str, int, float] | None = None
        for line in path.read_text().splitlines():
            kind, lock_path, mode, pid_text, stamp_text = line.split("\t")
            pid, stamp = int(pid_text), float(stamp_text)
            if held is not None and (kind == "lock" or held[2] != pid):
                spans.append((*held, deaths[held[2]]))  # its holder was killed holding it
                held = None
            if kind == "lock":
                held = (lock_path, mode, pid, stamp)
            elif held is not None:
                spans.append((*held, stamp))
                held = None
        if held is not None:
            spans.append((*held, deaths[held[2]]))
    return spans


def every_json_parses(root: Path) -> list[str]:
    """Files under the mesh that do not parse: .json records and the audit's JSON lines."""
    bad = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            if name.endswith(".json") and not name.startswith(".tmp-"):
                try:
                    json.loads(full.read_bytes())
                except ValueError:
                    bad.append(str(full))
            elif name.endswith(".jsonl"):
                for line in full.read_text().splitlines():
                    try:
                        json.loads(line)
                    except ValueError:
                        bad.append(f"{full}: {line[:80]}")
    return bad


def temp_leftovers(root: Path) -> list[str]:
    """Temp files of killed writers: `.tmp-*` anywhere, files in maildir tmp/ folders."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        in_tmp = os.path.basename(dirpath) == "tmp"
        found += [os.path.join(dirpath, f) for f in files if f.startswith(".tmp-") or in_tmp]
    return found


def message_files(mesh: Mesh, name: str) -> dict[str, list[dict[str, Any]]]:
    """Every message file in the agent's inbox, unread and consumed, by id."""
    found: dict[str, list[dict[str, Any]]] = {}
    box = directory_of(mesh).store.path(f"inbox/{name}")
    for sub in ("new", "cur"):
        for dirpath, _dirs, files in os.walk(box / sub):
            for file_name in files:
                if file_name.startswith(".tmp-"):
                    continue
                record = json.loads((Path(dirpath) / file_name).read_bytes())
                found.setdefault(record["id"], []).append({**record, "_where": sub})
    return found


def message_rows(url: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """Every stored copy for the agent on a PostgreSQL mesh, by id, as `message_files` gives
    them (`_where` is "new" for an unread copy, "cur" for a read or archived one)."""
    import psycopg

    found: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, state, body::text FROM mesh_messages WHERE recipient = %s", (name,)
        ).fetchall()
    for msg_id, state, body in rows:
        record = json.loads(body)
        assert record["id"] == msg_id, (msg_id, record)
        found.setdefault(msg_id, []).append(
            {**record, "_where": "new" if state == "unread" else "cur"}
        )
    return found


def quarantined_rows(url: str) -> list[tuple[Any, ...]]:
    """What a PostgreSQL mesh has set aside as damaged (nothing, after a healthy storm)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT kind, key, reason FROM mesh_quarantine").fetchall()
