"""Agents: registration, names, states, identity heartbeats (issue 2).

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drasill_cli import agents, liveness
from drasill_cli.config import Config, LifecycleConfig
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner
from tests.harness import directory_of

pytestmark = pytest.mark.both_backends

AGENT_KEYS = {
    "name",
    "state",
    "pid",
    "host",
    "session",
    "role",
    "tool",
    "registered_at",
    "last_seen",
    "unread",
}


def test_agents_from_two_directories_see_each_other(cli: MeshRunner, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    cli.json("register", "alpha", "--role", "lead", cwd=one)
    cli.json("register", "beta", "--tool", "codex", cwd=two)
    for where in (one, two):
        found = cli.json("agents", cwd=where)
        assert [a["name"] for a in found] == ["alpha", "beta"]
        for agent in found:
            assert agent.keys() >= AGENT_KEYS
            assert agent["state"] == "active"
            assert agent["unread"] == 0


def test_32_concurrent_registrations_all_land(cli: MeshRunner) -> None:
    procs = [
        subprocess.Popen(
            cli.argv("register", f"agent-{i:02d}", "--json"),
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(32)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    found = cli.json("agents")
    assert sorted(a["name"] for a in found) == [f"agent-{i:02d}" for i in range(32)]
    if cli.kind == "directory":
        leftovers = [p for p in cli.mesh_dir.rglob("*") if p.name.startswith(".tmp-")]
        assert leftovers == []


def test_name_held_by_live_process_needs_replace(cli: MeshRunner) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cli.json("register", "alpha", "--pid", str(holder.pid))
        denied = cli.run("register", "alpha", "--pid", str(other.pid))
        assert denied.returncode == 1
        assert str(holder.pid) in denied.stderr
        assert "--replace" in denied.stderr
        denied_json = cli.run("register", "alpha", "--pid", str(other.pid), "--json")
        assert json.loads(denied_json.stdout)["error"]["code"] == "name-taken"
        won = cli.json("register", "alpha", "--pid", str(other.pid), "--replace")
        assert won["pid"] == other.pid
        assert won["state"] == "active"
    finally:
        holder.kill()
        other.kill()
        holder.wait()
        other.wait()


def test_reregistering_same_pid_refreshes(cli: MeshRunner) -> None:
    first = cli.json("register", "alpha", "--pid", str(os.getpid()), "--role", "lead")
    again = cli.json("register", "alpha", "--pid", str(os.getpid()))
    assert again["registered_at"] == first["registered_at"]
    assert again["role"] == "lead"


def test_dead_holder_can_be_taken_over(cli: MeshRunner) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    registered = cli.json("register", "alpha", "--pid", str(gone.pid))
    assert registered["state"] == "dead"
    assert cli.json("agents") == []
    assert [a["name"] for a in cli.json("agents", "--all")] == ["alpha"]
    taken = cli.json("register", "alpha", "--pid", str(os.getpid()))
    assert taken["state"] == "active"


@pytest.mark.parametrize(
    "name", ["../x", "A", "", "a" * 65, "all", "a/b", "bad\x01name", "-lead", "x y", "é"]
)
def test_invalid_names_exit_2_and_write_nothing(cli: MeshRunner, name: str) -> None:
    cli.json("register", "alpha")
    before = cli.snapshot()
    done = cli.run("register", name, "--json")
    assert done.returncode == 2
    assert "error" in json.loads(done.stdout)
    assert cli.snapshot() == before


def test_invalid_name_on_a_fresh_mesh_creates_nothing(cli: MeshRunner) -> None:
    done = cli.run("register", "Bad")
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid agent name")
    assert cli.is_empty()


@pytest.mark.directory_only("plants damaged agent files")
def test_garbage_agent_file_is_quarantined_and_reported(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    (cli.mesh_dir / "agents" / "broken.json").write_bytes(b"{not json")
    (cli.mesh_dir / "agents" / "wrong.json").write_text('{"name": 5}')
    done = cli.run("agents", "--json")
    assert done.returncode == 0
    assert [a["name"] for a in json.loads(done.stdout)] == ["alpha"]
    assert "quarantined agents/broken.json" in done.stderr
    assert "quarantined agents/wrong.json" in done.stderr
    kept = sorted(p.name for p in (cli.mesh_dir / "quarantine").iterdir())
    assert len(kept) == 2
    assert any(k.endswith("agents__broken.json") for k in kept)
    again = cli.run("agents", "--json")
    assert again.returncode == 0
    assert again.stderr == ""


@pytest.mark.directory_only("the mesh directory's permissions")
def test_world_writable_mesh_is_refused(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    cli.mesh_dir.chmod(0o777)
    done = cli.run("agents", "--json")
    assert done.returncode == 4
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "unsafe-permissions"
    assert "chmod" in error["message"]
    plain = cli.run("agents")
    assert plain.returncode == 4
    assert "chmod o-rwx" in plain.stderr


@pytest.mark.directory_only("the mesh directory's owner")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")
def test_mesh_owned_by_another_user_is_refused(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    os.chown(cli.mesh_dir, 12345, -1)
    done = cli.run("agents")
    assert done.returncode == 4
    assert "owned by uid 12345" in done.stderr
    assert "chown" in done.stderr


def test_identity_heartbeat_and_idle_state(mesh_dir: Path) -> None:
    config = Config(lifecycle=LifecycleConfig(idle_after=60, dead_after=120))
    mesh = Mesh.open(mesh_dir, config)
    agents.register(mesh, "alpha")
    beat = mesh_dir / "heartbeats" / "alpha"
    old = time.time() - 90
    os.utime(beat, (old, old))
    assert agents.list_agents(mesh)[0]["state"] == "idle"
    assert mesh.touch_heartbeat("alpha")
    assert agents.list_agents(mesh)[0]["state"] == "active"
    very_old = time.time() - 500
    os.utime(beat, (very_old, very_old))
    record = agents.get(mesh, "alpha")
    record.registered_at = "2020-01-01T00:00:00.000000Z"
    directory_of(mesh).store.write("agents/alpha.json", record.to_record())
    assert agents.list_agents(mesh) == []
    assert agents.list_agents(mesh, include_dead=True)[0]["state"] == "dead"
    assert not mesh.touch_heartbeat("nobody")


def test_as_flag_counts_as_heartbeat(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    cli.set_heartbeat("alpha", 1)
    cli.json("heartbeat", "--as", "alpha")
    assert (cli.heartbeat("alpha") or 0) > time.time() - 30
    cli.set_heartbeat("alpha", 1)
    cli.json("heartbeat", env={"DRASILL_AGENT": "alpha"})
    assert (cli.heartbeat("alpha") or 0) > time.time() - 30
    missing = cli.run("heartbeat", "--as", "ghost", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["code"] == "unknown-agent"


def test_recycled_pid_is_not_life(mesh: Mesh) -> None:
    me = os.getpid()
    started = liveness.process_start_time(me)
    assert started is not None
    assert liveness.pid_alive(me, started, liveness.hostname()) is True
    assert liveness.pid_alive(me, started - 100, liveness.hostname()) is False
    assert liveness.pid_alive(me, started, "some-other-host") is None
    agents.register(mesh, "alpha", pid=me)
    record = agents.get(mesh, "alpha")
    record.pid_started = started - 100
    directory_of(mesh).store.write("agents/alpha.json", record.to_record())
    assert agents.list_agents(mesh, include_dead=True)[0]["state"] == "dead"


def test_unregister_removes_the_agent(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    gone = cli.json("unregister", "alpha", "--as", "alpha")  # itself: no --force needed
    assert gone["name"] == "alpha"
    assert cli.json("agents", "--all") == []
    assert cli.run("unregister", "alpha").returncode == 3


def test_bad_flag_values_exit_2(cli: MeshRunner) -> None:
    for args in (
        ["register", "alpha", "--backend", "screen"],
        ["register", "alpha", "--pid", "-4"],
        ["register", "alpha", "--ram-gb", "-1"],
        ["register", "alpha", "--role", "bad\nrole"],
    ):
        done = cli.run(*args, "--json")
        assert done.returncode == 2, args
        assert json.loads(done.stdout)["error"]["message"]
    assert cli.is_empty()


def test_usage_error_is_json_with_json_flag(cli: MeshRunner) -> None:
    done = cli.run("register", "--json", "--no-such-flag")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-usage"


def test_waiting_for_budget_room_never_stalls_the_agent(cli: MeshRunner) -> None:
    """Issue 23 point 11: `register --wait` waits outside every exclusion, so commands as the
    same name (heartbeat, inbox, a plain re-register) answer at once meanwhile."""
    cli.config("[budgets]\nram_gb = 1.0\n")
    cli.json("register", "hog", "--ram-gb", "0.8")
    cli.json("register", "alpha")
    waiter = subprocess.Popen(
        cli.argv("register", "alpha", "--ram-gb", "0.5", "--wait", "8", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # well inside its wait
        assert waiter.poll() is None
        for args in (
            ("heartbeat", "--as", "alpha"),
            ("inbox", "--as", "alpha", "--peek"),
            ("register", "alpha", "--role", "tester"),
        ):
            started = time.monotonic()
            done = cli.run(*args, "--json")
            took = time.monotonic() - started
            assert done.returncode in (0, 1), (args, done.stdout, done.stderr)
            assert took < 3.0, (args, took)
        assert waiter.poll() is None  # still waiting: the others did not end its wait
        cli.json("unregister", "hog", "--as", "hog")
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    registered = json.loads(out)
    assert registered["ram_gb"] == 0.5
    assert registered["role"] == "tester"  # the refresh made meanwhile is kept
