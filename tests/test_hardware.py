"""Hardware budgets with real processes: measure, admit, enforce, `mesh hw` (issue 8)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from drasill_cli import agents, audit, hardware, hardware_probes, liveness, messages, status
from drasill_cli.config import BudgetsConfig, Config, WakeConfig
from drasill_cli.errors import InvalidInput
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

pytest_plugins = ["tests.wake_fixtures"]  # tmux_tmpdir

HOG = (
    "import signal, sys, time\n"
    "if '--ignore-term' in sys.argv: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "held = b'x' * (300 * 1024 * 1024)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
PARENT = (
    "import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1]], check=False)\n"
)

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes that hold ~300 MB once they print `ready`; all are reaped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(*extra: str, tree: bool = False) -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", PARENT, HOG] if tree else [sys.executable, "-c", HOG]
        proc = subprocess.Popen([*argv, *extra], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        for member in hardware_probes.process_tree([proc.pid]):
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    member.send_signal(signum)
                except psutil.NoSuchProcess:
                    break
        proc.wait(timeout=10)


def mesh_with(mesh_dir: Path, **budgets: Any) -> Mesh:
    """The Python API on the test's mesh with these budget settings."""
    return Mesh.open(mesh_dir, Config(budgets=BudgetsConfig(**budgets)))


def events(mesh: Mesh, name: str) -> list[dict[str, object]]:
    """Audit events of one kind."""
    return [e for e in audit.read_events(mesh) if e["event"] == name]


def wait_status(pid: int, wanted: set[str], timeout: float = 5.0) -> str:
    """Poll psutil until the process status is one of `wanted` (signals land asynchronously)."""
    deadline = time.monotonic() + timeout
    status = psutil.Process(pid).status()
    while status not in wanted and time.monotonic() < deadline:
        time.sleep(0.02)
        status = psutil.Process(pid).status()
    return status


def proc_state(pid: int) -> str:
    """The one-letter state in /proc/PID/stat (T for stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


# ---- measuring -------------------------------------------------------------------------------


def test_hw_report_measures_the_registered_process_tree(mesh: Mesh, spawn: Spawn) -> None:
    parent = spawn(tree=True)
    agents.register(mesh, "hog", pid=parent.pid, ram_gb=2.0)
    agents.register(mesh, "idle", ram_gb=0.5)
    report = hardware.hw_report(mesh)
    ram = report["ram"]
    assert ram["total_gb"] >= ram["available_gb"] > 0
    assert ram["declared_gb"] == 2.5
    assert ram["free_gb"] == round(min(ram["limit_gb"] - 2.5, ram["available_gb"]), 3)
    rows = {row["name"]: row for row in report["agents"]}
    hog = rows["hog"]
    assert len(hog["pids"]) == 2  # the parent and the child that holds the memory
    assert hog["pids"][0] == parent.pid
    assert 0.28 < hog["measured"]["ram_gb"] < 1.0
    assert hog["declared"] == {"ram_gb": 2.0, "vram_gb": None}
    assert hog["over"] == []
    assert rows["idle"]["measured"] == {"ram_gb": None}  # nothing to measure, not zero
    assert "gpu" not in report


def test_heimdall_session_child_is_measured(mesh_dir: Path, tmp_path: Path, spawn: Spawn) -> None:
    sockets = tmp_path / "heimdall"
    sockets.mkdir()
    hog = spawn()
    (sockets / "s1.sock").touch()
    (sockets / "s1.pid").write_text(f"{os.getpid()}\n{hog.pid}\n")
    mesh = Mesh.open(mesh_dir, Config(wake=WakeConfig(heimdall_socket_dir=str(sockets))))
    agents.register(mesh, "sess", session="s1", supervisor="heimdall", ram_gb=1.0)
    [row] = hardware.hw_report(mesh)["agents"]
    assert row["pids"] == [hog.pid]
    assert row["measured"]["ram_gb"] > 0.28


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.usefixtures("tmux_tmpdir")  # a private tmux server, not the user's default one
def test_tmux_pane_process_is_measured(mesh: Mesh) -> None:
    session = f"drasill-hw-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "sleep 60"], check=True)
    try:
        pane_pid = int(
            subprocess.run(
                ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        agents.register(mesh, "pane", session=session, supervisor="tmux")
        [row] = hardware.hw_report(mesh)["agents"]
        assert row["pids"][0] == pane_pid
        assert row["measured"]["ram_gb"] > 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_tmux_panes_resolve_sessions_pane_ids_and_windows() -> None:
    panes = liveness.TmuxPanes(
        [
            liveness.TmuxPane("work", "%1", 101),
            liveness.TmuxPane("work", "%2", 102),
            liveness.TmuxPane("other", "%7", None),
        ]
    )
    assert panes.pid("work") == 101  # a session counts its first pane
    assert panes.pid("%2") == 102
    assert panes.pid("work:1.0") == 101
    assert panes.pid("other") is None
    assert panes.pid("gone") is None
    assert panes.alive("other") is True  # a pane without a pid still exists
    assert panes.alive("work.1") is True
    assert panes.alive("gone") is False
    assert liveness.tmux_session_alive("work", panes) is True
    assert liveness.tmux_session_alive("work", None) is None
    assert liveness.tmux_session_alive("work", liveness.TmuxPanes()) is False


def test_one_measuring_pass_lists_tmux_panes_and_reads_processes_once(
    mesh: Mesh, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    hog = spawn(tree=True)
    fake = liveness.TmuxPanes([liveness.TmuxPane(f"s{i}", f"%{i}", hog.pid) for i in range(3)])
    listings: list[int] = []
    tables: list[int] = []

    def listing() -> liveness.TmuxPanes:
        listings.append(1)
        return fake

    monkeypatch.setattr(liveness, "tmux_panes", listing)
    real_table = hardware_probes.ProcessTable.__init__

    def counted(table: hardware_probes.ProcessTable) -> None:
        tables.append(1)
        real_table(table)

    monkeypatch.setattr(hardware_probes.ProcessTable, "__init__", counted)
    for i in range(3):
        agents.register(mesh, f"pane-{i}", session=f"s{i}:0.0", supervisor="tmux")
    agents.register(mesh, "pid", pid=hog.pid, ram_gb=2.0)
    listings.clear()
    tables.clear()
    rows = {row["name"]: row for row in hardware.hw_report(mesh)["agents"]}
    assert (len(listings), len(tables)) == (1, 1)
    assert {name: len(row["pids"]) for name, row in rows.items()} == dict.fromkeys(rows, 2)
    listings.clear()
    tables.clear()
    snapshot = status.snapshot(mesh)
    assert (len(listings), len(tables)) == (1, 1)
    for view in snapshot["agents"]:
        assert view["state"] != "dead"
        assert view["measured"]["ram_gb"] == pytest.approx(
            rows[view["name"]]["measured"]["ram_gb"], abs=0.01
        )
    budgets = snapshot["budgets"]["ram"]
    assert budgets["declared_gb"] == 2.0
    assert budgets["agents_gb"] > 4 * 0.28


# ---- admission -------------------------------------------------------------------------------


def test_second_declaration_beyond_ram_gb_is_refused_until_the_first_unregisters(
    cli: MeshRunner,
) -> None:
    cli.config("[budgets]\nram_gb = 1.0\n")
    cli.json("register", "one", "--ram-gb", "0.7")
    done = cli.run("register", "two", "--ram-gb", "0.5", "--json")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "budget-denied"
    assert error["needed"] == {"ram_gb": 0.5}
    assert error["free"] == {"ram_gb": 0.3}
    human = cli.run("register", "two", "--ram-gb", "0.5")
    assert human.returncode == 1
    assert human.stdout == ""
    assert "needs 0.5 GiB of RAM but 0.3 GiB is free" in human.stderr
    assert [a["name"] for a in cli.json("agents")] == ["one"]  # nothing was written
    cli.json("unregister", "one", "--as", "one")
    assert cli.json("register", "two", "--ram-gb", "0.5")["ram_gb"] == 0.5


def test_wait_admits_once_budget_is_released_and_times_out_otherwise(cli: MeshRunner) -> None:
    cli.config("[budgets]\nram_gb = 1.0\n")
    cli.json("register", "one", "--ram-gb", "0.7")
    started = time.monotonic()
    timed_out = cli.run("register", "two", "--ram-gb", "0.5", "--wait", "0.6", "--json")
    assert timed_out.returncode == 1
    assert time.monotonic() - started >= 0.6
    assert json.loads(timed_out.stdout)["error"]["free"] == {"ram_gb": 0.3}
    waiter = subprocess.Popen(
        cli.argv("register", "two", "--ram-gb", "0.5", "--wait", "30", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert waiter.poll() is None  # still waiting for budget
    cli.json("unregister", "one", "--as", "one")
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0
    assert json.loads(out)["name"] == "two"


def test_concurrent_registrations_never_exceed_the_limit(cli: MeshRunner) -> None:
    cli.config("[budgets]\nram_gb = 1.0\n")
    procs = [
        subprocess.Popen(
            cli.argv("register", f"racer-{i}", "--ram-gb", "0.4", "--json"),
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(5)
    ]
    codes = sorted(proc.wait(timeout=60) for proc in procs)
    for proc in procs:
        proc.communicate()
    assert codes == [0, 0, 1, 1, 1]
    assert hardware.hw_report(Mesh.open(cli.mesh_dir, Config()))["ram"]["declared_gb"] == 0.8


def test_refresh_counts_only_the_increase_and_dead_agents_release(mesh_dir: Path) -> None:
    mesh = mesh_with(mesh_dir, ram_gb=1.0)
    agents.register(mesh, "one", ram_gb=0.7)
    agents.register(mesh, "one", ram_gb=0.9)  # its own 0.7 is not counted against it
    agents.register(mesh, "one", ram_gb=0.9)  # keeping an admitted declaration needs no check
    with pytest.raises(hardware.BudgetDenied) as denied:
        agents.register(mesh, "two", ram_gb=0.2)
    assert denied.value.exit_code == 1
    assert denied.value.details == {"needed": {"ram_gb": 0.2}, "free": {"ram_gb": 0.1}}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    agents.register(mesh, "one", pid=gone.pid, ram_gb=0.9, replace=True)  # a dead agent
    assert agents.register(mesh, "two", ram_gb=1.0)["ram_gb"] == 1.0
    with pytest.raises(InvalidInput):
        agents.register(mesh, "three", ram_gb=0.1, wait=-1)


def test_free_is_capped_by_available_ram_plus_the_agents_own_use(
    mesh: Mesh, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    hog = spawn()
    scarce = {"total_gb": 16.0, "available_gb": 0.05, "used_gb": 15.95}
    monkeypatch.setattr(hardware, "ram_probe", lambda: scarce)
    with pytest.raises(hardware.BudgetDenied) as denied:
        agents.register(mesh, "newcomer", ram_gb=0.1)
    assert denied.value.details["free"] == {"ram_gb": 0.05}
    # The machine's available RAM already excludes the hog's 300 MB: they are its own.
    assert agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.3)["pid"] == hog.pid


# ---- enforcement -----------------------------------------------------------------------------


@pytest.fixture
def inbox() -> Callable[[Mesh, str], list[str]]:
    """Bodies of the unread messages an agent received from the mesh."""
    return lambda mesh, name: [
        m["body"] for m in messages.list_unread(mesh, name) if m["from"] == "mesh"
    ]


def test_warn_policy_messages_the_agent_once_per_overrun(
    mesh: Mesh, spawn: Spawn, inbox: Callable[[Mesh, str], list[str]]
) -> None:
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    [action] = hardware.enforce(mesh, "warn")
    assert action["action"] == "warn"
    assert action["delivered"] is True
    [over] = action["over"]
    assert over["resource"] == "ram"
    assert over["declared_gb"] == 0.1
    assert over["measured_gb"] > 0.28
    [event] = events(mesh, "budget-warn")
    assert event["agent"] == "hog"
    assert event["actor"] == "mesh"
    [body] = inbox(mesh, "hog")
    assert "GiB of RAM (declared 0.1 GiB)" in body
    assert "--ram-gb" in body
    assert hardware.enforce(mesh, "warn") == []  # the same overrun is not warned again
    assert len(inbox(mesh, "hog")) == 1
    assert psutil.Process(hog.pid).status() != psutil.STATUS_STOPPED
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=1.0)
    assert hardware.enforce(mesh, "warn") == []  # under again: the warning is forgotten
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.2)
    assert [a["action"] for a in hardware.enforce(mesh, "warn")] == ["warn"]


def test_pause_policy_stops_the_tree_and_resumes_it_when_declaration_is_raised(
    mesh_dir: Path, spawn: Spawn
) -> None:
    mesh = mesh_with(mesh_dir, policy="pause")
    parent = spawn(tree=True)
    [child] = psutil.Process(parent.pid).children()
    agents.register(mesh, "hog", pid=parent.pid, ram_gb=0.1)
    [action] = hardware.enforce(mesh)  # the configured policy
    assert action["action"] == "pause"
    assert sorted(action["pids"]) == sorted([parent.pid, child.pid])
    for pid in (parent.pid, child.pid):
        assert wait_status(pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
        assert proc_state(pid) == "T"
    assert hardware.enforce(mesh) == []  # stays paused, nothing to do twice
    assert hardware.hw_report(mesh)["agents"][0]["paused"] is True
    agents.register(mesh, "hog", pid=parent.pid, ram_gb=1.0)
    [resumed] = hardware.enforce(mesh)
    assert resumed["action"] == "resume"
    for pid in (parent.pid, child.pid):
        assert wait_status(pid, {psutil.STATUS_SLEEPING}) == psutil.STATUS_SLEEPING
    assert [e["agent"] for e in events(mesh, "budget-resume")] == ["hog"]
    assert hardware.hw_report(mesh)["agents"][0]["paused"] is False


def test_a_paused_agent_that_unregisters_is_resumed(mesh: Mesh, spawn: Spawn) -> None:
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    assert [a["action"] for a in hardware.enforce(mesh, "pause")] == ["pause"]
    assert wait_status(hog.pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
    agents.unregister(mesh, "hog")
    [action] = hardware.enforce(mesh, "pause")
    assert action == {
        "agent": "hog",
        "action": "resume",
        "pids": [hog.pid],
        "reason": "unregistered or dead",
    }
    assert wait_status(hog.pid, {psutil.STATUS_SLEEPING}) == psutil.STATUS_SLEEPING


def test_kill_policy_terminates_the_agent(mesh_dir: Path, spawn: Spawn) -> None:
    mesh = mesh_with(mesh_dir, kill_grace=10.0)
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    started = time.monotonic()
    [action] = hardware.enforce(mesh, "kill")
    assert time.monotonic() - started < 5  # SIGTERM sufficed: no wait for the grace period
    assert action["action"] == "kill"
    assert action["forced"] == []
    hog.wait(timeout=5)
    assert not psutil.pid_exists(hog.pid)
    assert agents.list_agents(mesh, include_dead=True)[0]["state"] == "dead"
    assert events(mesh, "budget-kill")[0]["pids"] == [hog.pid]


def test_kill_policy_sigkills_what_ignores_sigterm_after_the_grace(
    mesh_dir: Path, spawn: Spawn
) -> None:
    mesh = mesh_with(mesh_dir, kill_grace=0.5)
    hog = spawn("--ignore-term")
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    [action] = hardware.enforce(mesh, "kill")
    assert action["forced"] == [hog.pid]
    hog.wait(timeout=5)
    assert not psutil.pid_exists(hog.pid)


def test_enforce_never_signals_its_own_process(mesh: Mesh) -> None:
    agents.register(mesh, "me", pid=os.getpid(), ram_gb=0.001)
    [action] = hardware.enforce(mesh, "pause")
    # Children of this test process (another test's subprocess still running in this xdist
    # worker) are the agent's tree and may be paused: resume them at once.
    for pid in action["pids"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    me = psutil.Process()
    assert not {me.pid, *(p.pid for p in me.parents())} & set(action["pids"])
    with pytest.raises(InvalidInput):
        hardware.enforce(mesh, "explode")


# ---- CLI -------------------------------------------------------------------------------------


def test_mesh_hw_json_without_gpu(cli: MeshRunner, spawn: Spawn) -> None:
    hog = spawn()
    cli.json("register", "hog", "--pid", str(hog.pid), "--ram-gb", "0.5")
    report = cli.json("hw")
    assert {"total_gb", "available_gb", "used_gb", "limit_gb", "free_gb"} <= report["ram"].keys()
    assert "gpu" not in report
    [row] = report["agents"]
    assert row["declared"]["ram_gb"] == 0.5
    assert row["measured"]["ram_gb"] > 0.28
    assert "vram_gb" not in row["measured"]
    human = cli.run("hw")
    assert human.returncode == 0
    assert "RAM: total" in human.stdout
    assert "GPU: none found" in human.stdout
    assert "hog" in human.stdout


# ---- whose processes enforcement may signal (issue 24, point 3) ------------------------------


def plant_agent(mesh: Mesh, name: str, **fields: Any) -> None:
    """Store an agent record as someone writing to the mesh could, without `mesh register`."""
    from drasill_cli.models import AgentRecord

    record = AgentRecord.from_record(
        {"name": name, "host": liveness.hostname(), "registered_at": "2026-01-01T00:00:00Z"}
        | fields
    )
    mesh.backend.presence.change(name, lambda _old: record, beat=True)


@pytest.mark.parametrize("mesh_kind", ["directory", "postgres"], indirect=True)
def test_registration_records_the_registering_uid(mesh: Mesh, spawn: Spawn) -> None:
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    stored = mesh.backend.presence.get("hog")
    assert stored is not None
    assert stored.uid == os.getuid()
    [view] = agents.list_agents(mesh)
    assert "uid" not in view  # bookkeeping, like the pid's start time: not in the agent object


@pytest.mark.parametrize("policy", ["pause", "kill"])
@pytest.mark.parametrize(
    "planted",
    [
        {},  # a record as older versions wrote it, or a planted one: no registering uid
        {"uid": os.getuid() + 1},  # registered by someone else
    ],
    ids=["no-uid", "other-uid"],
)
def test_a_record_not_provably_the_owners_is_reported_never_signalled(
    mesh: Mesh, spawn: Spawn, policy: str, planted: dict[str, Any]
) -> None:
    hog = spawn()
    started = psutil.Process(hog.pid).create_time()
    plant_agent(mesh, "planted", pid=hog.pid, pid_started=started, ram_gb=0.1, **planted)
    [action] = hardware.enforce(mesh, policy)
    assert action["action"] == "report"
    assert action["agent"] == "planted"
    assert "uid" in action["reason"]
    assert action["pids"] == []
    from drasill_cli.cli.views import describe_watch_event as describe

    assert "not provably its own" in describe({"event": "hardware", **action})
    time.sleep(0.2)
    assert proc_state(hog.pid) not in ("T", "Z")
    assert hog.poll() is None
    assert hardware.enforce(mesh, policy) == []  # reported once per overrun
    [event] = events(mesh, "budget-report")
    assert event["agent"] == "planted"


def test_a_recycled_session_root_is_reported_never_signalled(
    mesh_dir: Path, tmp_path: Path, spawn: Spawn
) -> None:
    """A session agent's process is the one its session ran at registration (its start time)."""
    sockets = tmp_path / "heimdall"
    sockets.mkdir()
    first, second = spawn(), spawn()
    (sockets / "s1.sock").touch()
    (sockets / "s1.pid").write_text(f"{os.getpid()}\n{first.pid}\n")
    mesh = Mesh.open(mesh_dir, Config(wake=WakeConfig(heimdall_socket_dir=str(sockets))))
    agents.register(mesh, "sess", session="s1", supervisor="heimdall", ram_gb=0.1)
    (sockets / "s1.pid").write_text(f"{os.getpid()}\n{second.pid}\n")  # not what registered
    [action] = hardware.enforce(mesh, "kill")
    assert action["action"] == "report"
    assert "start" in action["reason"]
    assert second.poll() is None
    (sockets / "s1.pid").write_text(f"{os.getpid()}\n{first.pid}\n")
    [action] = hardware.enforce(mesh, "kill")
    assert action["action"] == "kill"
    first.wait(timeout=10)
    assert second.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
def test_a_process_of_another_user_in_the_tree_is_reported_never_signalled(
    mesh: Mesh, spawn: Spawn
) -> None:
    """The agent's own process runs a child as another user (sudo, a service): nothing of the
    tree is signalled, since the mesh may act only on what the registering uid owns."""
    script = (
        "import subprocess, time\n"
        "held = b'x' * (300 * 1024 * 1024)\n"
        "child = subprocess.Popen(['sleep', '120'], user=65534, group=65534, extra_groups=[])\n"
        "print('ready', flush=True)\n"
        "child.wait()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        [child] = psutil.Process(parent.pid).children()
        assert child.uids().real == 65534
        agents.register(mesh, "mixed", pid=parent.pid, ram_gb=0.1)
        [action] = hardware.enforce(mesh, "kill")
        assert action["action"] == "report"
        assert str(child.pid) in action["reason"]
        assert parent.poll() is None and child.is_running()
    finally:
        for proc in hardware_probes.process_tree([parent.pid]):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        parent.wait(timeout=10)


# ---- who wrote the record: proven by storage, not by the record's content ----------------------

OTHER_UID = 65534  # nobody: a member of a shared mesh who is not the watcher's user


def _as_other_user(path: Path) -> None:
    """Make `path` what another user writing to a group-shared mesh would leave: a file of its
    own (a non-root user cannot give a file away, nor write into one only its owner may)."""
    os.chown(path, OTHER_UID, -1)


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root to make")
@pytest.mark.parametrize("policy", ["pause", "kill"])
def test_a_record_of_another_writer_naming_the_owners_uid_is_reported_never_signalled(
    mesh_dir: Path, spawn: Spawn, policy: str
) -> None:
    mesh = mesh_with(mesh_dir)
    hog = spawn()
    started = psutil.Process(hog.pid).create_time()
    plant_agent(mesh, "planted", pid=hog.pid, pid_started=started, ram_gb=0.1, uid=os.getuid())
    _as_other_user(mesh_dir / "agents" / "planted.json")
    stored = mesh.backend.presence.get("planted")
    assert stored is not None and stored.writer is not None
    assert stored.writer.uid == OTHER_UID
    [action] = hardware.enforce(mesh, policy)
    assert action["action"] == "report"
    assert str(OTHER_UID) in action["reason"]
    time.sleep(0.2)
    assert proc_state(hog.pid) not in ("T", "Z")
    assert hog.poll() is None
    # The genuine registration (the record rewritten by the owner) is enforced again.
    agents.register(mesh, "planted", pid=hog.pid, ram_gb=0.1)
    stored = mesh.backend.presence.get("planted")
    assert stored is not None and stored.writer is not None
    assert stored.writer.uid == os.geteuid()
    [action] = hardware.enforce(mesh, policy)
    assert action["action"] == policy


def test_a_group_writable_record_proves_no_writer(mesh_dir: Path, spawn: Spawn) -> None:
    """Anyone of the group may write into a group-writable file: its owner proves nothing."""
    mesh = mesh_with(mesh_dir)
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    record = mesh_dir / "agents" / "hog.json"
    assert not record.stat().st_mode & 0o022  # the mesh writes records only their owner may
    record.chmod(0o660)
    stored = mesh.backend.presence.get("hog")
    assert stored is not None and stored.writer is not None
    assert stored.writer.uid is None
    [action] = hardware.enforce(mesh, "pause")
    assert action["action"] == "report"
    assert hog.poll() is None and proc_state(hog.pid) != "T"


@pytest.mark.parametrize("mesh_kind", ["postgres"], indirect=True)
def test_postgres_records_the_writing_role(mesh: Mesh, spawn: Spawn) -> None:
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    stored = mesh.backend.presence.get("hog")
    assert stored is not None and stored.writer is not None
    assert stored.writer.role == "mesh"  # the test server's role (current_user)
    assert stored.writer.uid is None
    assert [a["action"] for a in hardware.enforce(mesh, "pause")] == ["pause"]


def test_a_planted_pause_never_resumes_what_the_watcher_did_not_stop(
    mesh_dir: Path, spawn: Spawn
) -> None:
    """A stopped process of the owner (Ctrl-Z, a debugger) named in a planted pause record
    stays stopped: the watcher resumes only what it paused itself."""
    mesh = mesh_with(mesh_dir)
    hog = spawn()
    os.kill(hog.pid, signal.SIGSTOP)
    assert wait_status(hog.pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
    started = psutil.Process(hog.pid).create_time()
    plant_agent(mesh, "planted", pid=hog.pid, pid_started=started, uid=os.getuid())
    over = [{"resource": "ram", "declared_gb": 0.0, "measured_gb": 0.3}]
    _plant_pause(mesh_dir, "planted", [(hog.pid, started)], over)
    assert hardware.enforce(mesh, "pause") == []  # not a pause of this watcher's: nothing
    assert mesh.backend.budgets.resume("planted") == []  # not even when asked directly
    time.sleep(0.2)
    assert proc_state(hog.pid) == "T"


def _plant_pause(
    mesh_dir: Path, name: str, stopped: list[tuple[int, float]], over: list[dict[str, Any]]
) -> None:
    """A pause record as someone else writing to the mesh could leave it."""
    record = {"agent": name, "pids": [list(s) for s in stopped], "over": over}
    path = mesh_dir / "budgets" / "paused" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    path.chmod(0o660)  # group-writable: no proof of its writer, even where it is the watcher's
    if os.geteuid() == 0:
        _as_other_user(path)


@pytest.mark.parametrize("mesh_kind", ["postgres"], indirect=True)
def test_a_pause_row_no_watcher_wrote_never_resumes(mesh: Mesh, spawn: Spawn) -> None:
    """A pause row written with the URL (not by a watcher: no role recorded by the server)."""
    hog = spawn()
    os.kill(hog.pid, signal.SIGSTOP)
    assert wait_status(hog.pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
    started = psutil.Process(hog.pid).create_time()
    plant_agent(mesh, "planted", pid=hog.pid, pid_started=started, uid=os.getuid())
    record = {"agent": "planted", "pids": [[hog.pid, started]], "over": []}
    with mesh.backend.transaction() as cur:  # type: ignore[attr-defined] # the PostgreSQL backend
        cur.execute(
            "INSERT INTO mesh_budgets (agent, state, host, record) VALUES (%s, 'paused', %s, %s)",
            ("planted", liveness.hostname(), json.dumps(record)),
        )
    assert hardware.enforce(mesh, "pause") == []
    assert mesh.backend.budgets.resume("planted") == []
    time.sleep(0.2)
    assert proc_state(hog.pid) == "T"


def _as_another_user(uid: int, gid: int, act: Callable[[], None]) -> None:
    """Run `act` in a forked child that is user `uid` with `gid` among its groups (as a member
    of a group-shared mesh would be); it must succeed."""
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child reports through its exit status only
        code = 1
        try:
            os.setgroups([gid])
            os.setgid(uid)
            os.setuid(uid)
            act()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_member_of_a_group_shared_mesh_cannot_plant_an_enforced_record(
    spawn: Spawn,
) -> None:
    """A member of the mesh's group writes a record naming the owner's uid and the owner's
    process: the owner's watcher reports it and signals nothing; the owner's own registration
    of that process is enforced."""
    base = Path(tempfile.mkdtemp(prefix="drasill-shared-"))
    try:
        base.chmod(0o711)  # the other user reaches the mesh inside, and nothing else here
        mesh_dir = base / "mesh"
        config = Config(group_shared=True)
        mesh = Mesh.open(mesh_dir, config)
        hog = spawn()
        agents.register(mesh, "other", pid=os.getpid())  # the mesh and its folders exist
        gid = mesh_dir.stat().st_gid
        started = psutil.Process(hog.pid).create_time()

        def plant() -> None:
            member = Mesh.open(mesh_dir, config)
            fields = {"pid": hog.pid, "pid_started": started, "ram_gb": 0.1, "uid": 0}
            plant_agent(member, "planted", **fields)

        _as_another_user(OTHER_UID, gid, plant)
        assert (mesh_dir / "agents" / "planted.json").stat().st_uid == OTHER_UID
        for policy in ("pause", "kill"):
            actions = hardware.enforce(mesh, policy)
            assert [a["action"] for a in actions] == ["report"], actions
            assert f"written by uid {OTHER_UID}" in actions[0]["reason"]
            mesh.backend.budgets.forget_warning("planted")
        time.sleep(0.2)
        assert proc_state(hog.pid) not in ("T", "Z") and hog.poll() is None
        agents.register(mesh, "planted", pid=hog.pid, ram_gb=0.1)  # the owner's own record
        assert [a["action"] for a in hardware.enforce(mesh, "pause")] == ["pause"]
        assert wait_status(hog.pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
    finally:
        shutil.rmtree(base)


def test_a_planted_pause_never_shields_an_agent_from_being_paused(
    mesh_dir: Path, spawn: Spawn
) -> None:
    """A pause record the watcher did not write does not count as a pause: the agent over its
    declaration is paused all the same (and the record's processes are not resumed)."""
    mesh = mesh_with(mesh_dir)
    hog = spawn()
    agents.register(mesh, "hog", pid=hog.pid, ram_gb=0.1)
    _plant_pause(mesh_dir, "hog", [], [])
    assert "hog" in mesh.backend.budgets.paused()  # shown as paused (mesh hw) ...
    assert [a["action"] for a in hardware.enforce(mesh, "pause")] == ["pause"]  # ... not trusted
    assert wait_status(hog.pid, {psutil.STATUS_STOPPED}) == psutil.STATUS_STOPPED
