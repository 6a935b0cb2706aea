"""One PostgreSQL mesh shared by several hosts, simulated on one machine.

A host is a process run under `unshare --uts` with a hostname of its own (`box-a`, ...), so
`liveness.hostname()` (the kernel's nodename) is what that host records and judges by. Every
command is the real CLI (or, for the claim race, the Python API in a process per host) against
a real PostgreSQL server; the contract's "One mesh across machines" is what is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import pg_cluster
from tests.conftest import MeshRunner, with_schema
from tests.pg_soak import unshare_refusal

CLAIMERS = Path(__file__).with_name("multihost_claimers.py")


_REFUSAL = unshare_refusal()
pytestmark = pytest.mark.skipif(
    _REFUSAL is not None, reason=f"simulated hosts need `unshare --uts` (root): {_REFUSAL}"
)


class Host:
    """One simulated machine: every process it runs has the hostname `name`."""

    def __init__(self, name: str, runner: MeshRunner) -> None:
        self.name = name
        self.runner = runner

    def argv(self, *argv: str) -> list[str]:
        """`argv` run under this host's name."""
        return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv]

    def mesh_argv(self, *args: str) -> list[str]:
        return self.argv(*self.runner.argv(*args))

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`mesh ARGS` on this host."""
        return subprocess.run(
            self.mesh_argv(*args),
            capture_output=True,
            text=True,
            env=self.runner.env,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, (self.name, args, done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.mesh_argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.runner.env,
        )


def _runner(url: str, home: Path) -> MeshRunner:
    home.mkdir(parents=True, exist_ok=True)
    return MeshRunner(home / "no-mesh-dir", home, url=url)


@pytest.fixture
def runner(pg_mesh_url: str, tmp_path: Path) -> MeshRunner:
    """The CLI's environment on every host: the shared mesh's URL, no mesh directory."""
    return _runner(pg_mesh_url, tmp_path / "home")


def _hosts(runner: MeshRunner, count: int) -> list[Host]:
    return [Host(f"box-{chr(ord('a') + i)}", runner) for i in range(count)]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process (the same pid namespace serves every simulated host)."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _gone_pid() -> int:
    """The pid of a process that has exited and been reaped: no such process exists."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _agent(host: Host, name: str) -> dict[str, Any]:
    found = [agent for agent in host.json("agents", "--all") if agent["name"] == name]
    assert len(found) == 1, found
    return dict(found[0])


def _mesh(url: str) -> Mesh:
    return Mesh.open(config=Config(), mesh_url=url)


# ---- 1. a prune on host B never marks host A's live agent dead ---------------------------------


def test_a_prune_on_another_host_judges_an_agent_by_its_heartbeat_alone(
    runner: MeshRunner, sleeper: subprocess.Popen[bytes]
) -> None:
    box_a, box_b = _hosts(runner, 2)
    # On A: one agent whose process lives, one whose pid no longer exists on A, both fresh.
    live = box_a.json("register", "live", "--pid", str(sleeper.pid))
    gone = box_a.json("register", "gone", "--pid", str(_gone_pid()))
    assert live["host"] == gone["host"] == "box-a"
    assert _agent(box_a, "gone")["state"] == "dead"  # A checks the pid: gone
    # B cannot check A's pids: a fresh heartbeat keeps both alive there, and B's prune says so.
    assert _agent(box_b, "gone")["state"] == "active"
    box_b.json("prune")
    for name in ("live", "gone"):
        agent = _agent(box_b, name)
        assert agent["state"] == "active" and agent.get("dead_at") is None, agent
    # A's prune judges its own pids: `gone` is dead for every host from now on, `live` is not.
    box_a.json("prune")
    assert _agent(box_b, "gone")["dead_at"] is not None
    assert _agent(box_b, "gone")["state"] == "dead"
    assert _agent(box_b, "live")["dead_at"] is None


DEAD_AFTER = 5.0


def test_another_hosts_agent_dies_on_b_only_after_dead_after_without_a_heartbeat(
    runner: MeshRunner, pg_mesh_url: str
) -> None:
    runner.config(f"[lifecycle]\nidle_after = 1\ndead_after = {DEAD_AFTER}\n")
    box_a, box_b = _hosts(runner, 2)
    box_a.json("register", "worker", "--pid", str(_gone_pid()))  # dead by A's judgement
    registered = time.monotonic()
    presence = _mesh(pg_mesh_url).backend.presence
    # It keeps beating from A for longer than dead_after: B's prunes never kill it.
    while time.monotonic() - registered < DEAD_AFTER + 1:
        assert box_a.run("heartbeat", "--as", "worker").returncode == 0
        box_b.json("prune")
        record = presence.get("worker")
        assert record is not None and record.dead_at is None, record
    # Silent for dead_after: now B's prune declares it dead, by its heartbeat's age alone.
    time.sleep(DEAD_AFTER + 0.5)
    box_b.json("prune")
    record = presence.get("worker")
    assert record is not None and record.dead_at is not None, record


# ---- 2. mail sent on B wakes an `inbox --wait` on A within a second ----------------------------


def _listening(url: str) -> int:
    """How many sessions of the mesh are waiting in LISTEN (a watch lists itself in
    `mesh_listening` in the transaction that LISTENs)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(DISTINCT pid) FROM mesh_listening").fetchone()
    return int(row[0]) if row else 0


def test_mail_sent_on_one_host_wakes_a_waiter_on_another_within_a_second(
    runner: MeshRunner, pg_mesh_url: str
) -> None:
    box_a, box_b = _hosts(runner, 2)
    box_a.json("register", "alice")
    before = _listening(pg_mesh_url)
    waiter = box_a.popen("inbox", "alice", "--wait", "60", "--json")
    exited: list[float] = []

    def note_exit() -> None:
        waiter.wait()
        exited.append(time.monotonic())

    watcher = threading.Thread(target=note_exit)
    watcher.start()
    deadline = time.monotonic() + 30
    while _listening(pg_mesh_url) <= before and time.monotonic() < deadline:
        assert waiter.poll() is None, waiter.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # the waiter has checked its inbox (empty) and sleeps on the notification
    assert waiter.poll() is None
    sent = box_b.json("send", "alice", "hello from box-b", "--as", "bob")
    sent_at = time.monotonic()
    watcher.join(timeout=30)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, (out, err)
    assert json.loads(out)["id"] == sent["id"]
    assert exited[0] - sent_at < 1.0, f"woken {exited[0] - sent_at:.2f} s after the send"


@pytest.mark.parametrize("by", ["mail", "task"])
def test_next_wait_on_one_host_wakes_within_a_second_on_mail_or_a_task_from_another(
    runner: MeshRunner, pg_mesh_url: str, by: str
) -> None:
    box_a, box_b = _hosts(runner, 2)
    box_a.json("register", "alice")
    before = _listening(pg_mesh_url)
    waiter = box_a.popen("next", "--wait", "60", "--as", "alice", "--json")
    deadline = time.monotonic() + 30
    while _listening(pg_mesh_url) <= before and time.monotonic() < deadline:
        assert waiter.poll() is None, waiter.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # the waiter has looked (nothing to do) and sleeps on the notification
    assert waiter.poll() is None, waiter.communicate()
    if by == "mail":
        done = box_b.run("send", "alice", "hello from box-b", "--as", "bob")
    else:
        done = box_b.run("task", "add", "work from box-b", "--as", "bob")
    sent_at = time.monotonic()  # after the command's own start-up and exit
    assert done.returncode == 0, done.stderr
    assert waiter.stdout is not None
    line = waiter.stdout.readline()
    woken = time.monotonic()
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, (line, out, err)
    assert json.loads(line)["kind"] == ("message" if by == "mail" else "task")
    assert woken - sent_at < 1.0, f"woken {woken - sent_at:.2f} s after the {by} ended"


def test_a_wait_on_one_host_keeps_its_agent_alive_for_a_prune_on_another(
    runner: MeshRunner, sleeper: subprocess.Popen[bytes]
) -> None:
    runner.config("[lifecycle]\nidle_after = 1\ndead_after = 2\n")
    box_a, box_b = _hosts(runner, 2)
    # Alive on A by its process; B can judge it by its heartbeat alone.
    box_a.json("register", "worker", "--pid", str(sleeper.pid))
    waiter = box_a.popen("next", "--wait", "5", "--as", "worker")
    time.sleep(3.5)  # longer than dead_after since its last own command
    assert waiter.poll() is None, waiter.communicate()
    box_b.json("prune")
    agent = _agent(box_b, "worker")
    assert agent["state"] != "dead" and agent.get("dead_at") is None, agent
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1 and "still nothing to do for worker" in err, (out, err)


# ---- 3. 64 claimers over 4 hosts x 50 rounds: one winner each ---------------------------------

HOSTS, PER_HOST, TASKS_PER_ROUND = 4, 16, 16


@pytest.mark.parametrize(
    "rounds",
    [
        5,  # the default selection: the same race, fewer rounds (about 10 s on 2 idle cores)
        # The full size: about 50 s of client CPU alone, too long for the default selection.
        pytest.param(50, marks=pytest.mark.slow),
    ],
)
def test_claimers_on_four_hosts_win_every_task_exactly_once(
    runner: MeshRunner, pg_mesh_url: str, rounds: int
) -> None:
    mesh = _mesh(pg_mesh_url)
    drivers = [
        subprocess.Popen(
            host.argv(sys.executable, str(CLAIMERS), host.name, str(PER_HOST)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=runner.env,
        )
        for host in _hosts(runner, HOSTS)
    ]
    added: list[str] = []
    winners: dict[str, list[str]] = {}
    try:
        for round_no in range(rounds):
            new = {
                tasks.add_task(mesh, f"r{round_no} t{i}", actor="boss")["id"]
                for i in range(TASKS_PER_ROUND)
            }
            added.extend(new)
            for driver in drivers:
                assert driver.stdin is not None
                driver.stdin.write("go\n")
                driver.stdin.flush()
            won: list[list[str]] = []
            for driver in drivers:
                assert driver.stdout is not None
                line = driver.stdout.readline()
                assert line, driver.communicate(timeout=10)
                result = json.loads(line)
                assert not isinstance(result, dict), result
                won.extend(result)
            claimed = [task_id for _claimer, task_id in won]
            assert Counter(claimed) == Counter(new), f"round {round_no}: {sorted(claimed)}"
            for claimer, task_id in won:
                winners.setdefault(task_id, []).append(claimer)
    finally:
        for driver in drivers:
            if driver.stdin is not None:
                driver.stdin.close()
        for driver in drivers:
            driver.wait(timeout=30)
    assert len(added) == len(set(added)) == rounds * TASKS_PER_ROUND
    board = {task["id"]: task for task in tasks.list_tasks(mesh)}
    for task_id in added:
        assert winners[task_id] == [board[task_id]["claimed_by"]], board[task_id]
        assert board[task_id]["state"] == "claimed"
    by_host = Counter(claimer.rsplit("-c", 1)[0] for claimer in (w[0] for w in winners.values()))
    assert len(by_host) > 1, by_host  # the race really spanned hosts


# ---- 4. lock conflicts across hosts --------------------------------------------------------------


def test_a_write_lock_on_one_host_refuses_the_same_path_on_that_host_only(
    runner: MeshRunner, tmp_path: Path
) -> None:
    """Outside a work tree a lock is on the absolute path on its host (contract): the same path
    on another machine is another file."""
    runner.register("ann", "amy", "ben")
    box_a, box_b = _hosts(runner, 2)
    shared = tmp_path / "shared" / "notes.md"
    shared.parent.mkdir()
    shared.write_text("x\n")
    box_a.json("lock", str(shared), "--as", "ann")
    refused = box_a.run("lock", str(shared), "--as", "amy")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "ann" in refused.stderr and "write" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    box_b.json("lock", str(shared), "--as", "ben")  # box-b's own notes.md: no conflict
    held = {(lock["holder"], lock["host"]) for lock in box_b.json("locks")}
    assert held == {("ann", "box-a"), ("ben", "box-b")}
    shown = box_b.run("locks").stdout
    assert f"{shared} on box-a" in shown, shown


def _git(*args: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@x",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@x",
    )
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_clones_of_one_repository_on_two_hosts_contend_for_the_same_file(
    runner: MeshRunner, tmp_path: Path
) -> None:
    runner.register("ann", "ben")
    box_a, box_b = _hosts(runner, 2)
    origin = tmp_path / "origin"
    (origin / "src").mkdir(parents=True)
    (origin / "src" / "app.py").write_text("print('hi')\n")
    _git("init", "-q", cwd=origin)
    _git("add", "-A", cwd=origin)
    _git("commit", "-q", "-m", "first", cwd=origin)
    clone_a, clone_b = tmp_path / "on-a" / "repo", tmp_path / "on-b" / "work"
    for clone in (clone_a, clone_b):
        clone.parent.mkdir()
        _git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    held = box_a.json("lock", str(clone_a / "src" / "app.py"), "--as", "ann")
    key = held[0]["path"] if isinstance(held, list) else held["path"]
    assert key.startswith("git:") and key.endswith("/src/app.py"), held
    refused = box_b.run("lock", str(clone_b / "src" / "app.py"), "--as", "ben")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "ann" in refused.stderr and "box-a" in refused.stderr, refused.stderr
    # Another file of the same repository is free on B.
    box_b.json("lock", str(clone_b / "README-not-yet"), "--as", "ben")


# ---- 5. budgets per host ----------------------------------------------------------------------


def test_admission_counts_only_the_agents_of_the_registering_host(
    runner: MeshRunner, sleeper: subprocess.Popen[bytes]
) -> None:
    runner.config("[budgets]\nram_gb = 1.0\n")
    box_a, box_b = _hosts(runner, 2)
    pid = str(sleeper.pid)
    box_b.json("register", "big-b", "--pid", pid, "--ram-gb", "0.9")
    first = box_a.json("register", "a-one", "--pid", pid, "--ram-gb", "0.6")  # B's 0.9 not counted
    assert first["host"] == "box-a"
    refused = box_a.run("register", "a-two", "--pid", pid, "--ram-gb", "0.6")  # 0.6 + 0.6 > 1.0
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "0.6" in refused.stderr and "0.4" in refused.stderr, refused.stderr
    assert "a-two" not in {agent["name"] for agent in box_a.json("agents", "--all")}
    # B's own host still has room for 0.1 only.
    assert box_b.run("register", "b-two", "--pid", pid, "--ram-gb", "0.2").returncode == 1
    box_b.json("register", "b-three", "--pid", pid, "--ram-gb", "0.1")


# ---- 6. the database restarted midway ------------------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[Path]:
    """A cluster of this test's own (it is restarted: no other test may share it)."""
    if pg_cluster.server_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to restart")
    base = Path(tempfile.mkdtemp(prefix="drasill-pg-restart-"))
    try:
        pg_cluster.start(base)
        yield base
    finally:
        pg_cluster.stop(base)


class Loop:
    """Runs one command after another on a host until stopped, keeping every outcome."""

    def __init__(self, host: Host, make_args: Any) -> None:
        self.host, self.make_args = host, make_args
        self.outcomes: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            args = tuple(self.make_args(i))
            self.outcomes.append((args, self.host.run(*args, "--json", timeout=60)))
            i += 1

    def codes(self) -> list[int]:
        return [done.returncode for _args, done in self.outcomes]


def test_a_database_restart_fails_commands_with_exit_4_and_loses_nothing(
    own_cluster: Path, tmp_path: Path
) -> None:
    plain = with_schema(pg_cluster.url(own_cluster), "restart_test")
    secret = with_schema(
        pg_cluster.url(own_cluster, user=f"{pg_cluster.PASSWORD_ROLE}:{pg_cluster.PASSWORD}"),
        "restart_test",
    )
    box_a, box_b = _hosts(_runner(secret, tmp_path / "home"), 2)
    box_a.json("register", "reader")  # the schema is made by (and belongs to) the password role
    box_b.json("register", "claimer")  # only a registered name claims
    mesh = _mesh(plain)
    queued = {tasks.add_task(mesh, f"job {i}", actor="boss")["id"] for i in range(400)}
    sends = Loop(box_a, lambda i: ("send", "reader", f"body-{i}", "--as", "writer"))
    reads = Loop(box_a, lambda i: ("inbox", "reader"))
    claims = Loop(box_b, lambda i: ("claim", "--next", "--as", "claimer"))
    loops = (sends, reads, claims)
    for loop in loops:
        loop.thread.start()
    time.sleep(1.5)
    before = [len(loop.outcomes) for loop in loops]
    pg_cluster.restart(own_cluster, down_for=2.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        loop.codes()[start:].count(0) >= 2 for loop, start in zip(loops, before, strict=True)
    ):
        time.sleep(0.2)
    for loop in loops:
        loop.stop.set()
    for loop in loops:
        loop.thread.join(timeout=60)

    # During the outage: exit 4, one line naming the database's host, no traceback, no password.
    failed = [done for loop in loops for _args, done in loop.outcomes if done.returncode != 0]
    outage = [done for done in failed if done.returncode == 4]
    assert outage, [loop.codes() for loop in loops]
    for done in outage:
        assert pg_cluster.PASSWORD not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        error = json.loads(done.stdout)["error"]
        assert str(own_cluster / "socket") in error["message"], error
        assert len(done.stderr.strip().splitlines()) <= 1, done.stderr
    # Anything else that failed is an ordinary state: an empty inbox, nothing left to claim.
    assert {done.returncode for done in failed} <= {1, 4}
    for loop in loops:
        assert loop.codes()[-1] == 0 or loop is reads, loop.codes()

    # Mail: every message sent with exit 0 is consumed exactly once; a failed send is whole or
    # absent (its commit may have landed before the connection broke), never twice.
    sent_ok = {args[2] for args, done in sends.outcomes if done.returncode == 0}
    sent_failed = {args[2] for args, done in sends.outcomes if done.returncode != 0}
    consumed = [
        json.loads(done.stdout)["body"] for _args, done in reads.outcomes if done.returncode == 0
    ]
    while True:
        done = box_a.run("inbox", "reader", "--json")
        if done.returncode != 0:
            assert done.returncode == 1 and json.loads(done.stdout) is None, done
            break
        consumed.append(json.loads(done.stdout)["body"])
    counts = Counter(consumed)
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    assert sent_ok <= set(counts), sorted(sent_ok - set(counts))
    assert set(counts) <= sent_ok | sent_failed

    # Tasks: every claim with exit 0 won a task no one else won; a task is queued or claimed
    # whole; those claimed without a reported win are no more than the claims that failed.
    won = [json.loads(done.stdout)["id"] for _args, done in claims.outcomes if done.returncode == 0]
    assert len(won) == len(set(won))
    board = {task["id"]: task for task in tasks.list_tasks(_mesh(plain))}
    assert set(board) == queued
    claimed = {task_id for task_id, task in board.items() if task["state"] == "claimed"}
    assert set(won) <= claimed
    for task in board.values():
        assert (task["state"], task["claimed_by"]) in {("queued", None), ("claimed", "claimer")}
    assert len(claimed - set(won)) <= claims.codes().count(4)
