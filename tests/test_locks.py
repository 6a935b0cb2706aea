"""File locks: the compatibility table, paths, renewals, unlock rules, stale locks (issue 5).

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import audit, clock, locks, messages
from drasill_cli.backends.directory import layout
from drasill_cli.config import Config, LocksConfig
from drasill_cli.errors import InvalidInput, NegativeOutcome, NotFound
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner, register
from tests.harness import directory_of
from tests.wake_support import wait_until

pytestmark = pytest.mark.both_backends

LOCK_KEYS = {"path", "mode", "holder", "acquired_at", "expires_at"}

# The contract's table: held (rows) x asked (columns) between two different agents.
TABLE = {
    "read": {"read": True, "intent": True, "write": False, "co_write": False},
    "intent": {"read": True, "intent": False, "write": False, "co_write": False},
    "write": {"read": False, "intent": False, "write": False, "co_write": False},
    "co_write": {"read": False, "intent": False, "write": False, "co_write": True},
}


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("first", ["alpha", "beta"])
@pytest.mark.parametrize("asked", locks.MODES)
@pytest.mark.parametrize("held", locks.MODES)
def test_compatibility_table(
    cli: MeshRunner, tmp_path: Path, held: str, asked: str, first: str
) -> None:
    second = "beta" if first == "alpha" else "alpha"
    cli.register(first, second)
    target = str(tmp_path / "f.py")
    cli.json("lock", target, "--mode", held, "--as", first)
    done = cli.run("lock", target, "--mode", asked, "--as", second, "--json")
    out = json.loads(done.stdout)
    if TABLE[held][asked]:
        assert done.returncode == 0, done.stdout
        assert [(lock["holder"], lock["mode"]) for lock in out] == [(second, asked)]
    else:
        assert done.returncode == 1, done.stdout
        assert out["error"]["code"] == "lock-conflict"
        [conflict] = out["error"]["conflicts"]
        assert conflict.keys() >= LOCK_KEYS
        assert (conflict["holder"], conflict["mode"]) == (first, held)
    assert {lock["holder"] for lock in cli.json("locks")} == (
        {first, second} if TABLE[held][asked] else {first}
    )


def test_table_matches_the_core(mesh: Mesh) -> None:
    for held, row in TABLE.items():
        for asked, allowed in row.items():
            assert locks.compatible(held, asked) is allowed


@pytest.mark.parametrize("held", locks.MODES)
def test_an_agent_never_conflicts_with_itself(mesh: Mesh, tmp_path: Path, held: str) -> None:
    register(mesh, "alpha", "beta")
    target = str(tmp_path / "f")
    locks.acquire(mesh, [target, str(tmp_path)], "alpha", mode=held)
    for asked in locks.MODES:
        [granted] = locks.acquire(mesh, [target], "alpha", mode=asked)
        assert granted["mode"] == asked
    assert len(locks.list_locks(mesh)) == 2


def test_upgrade_succeeds_only_without_other_readers(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    target = str(tmp_path / "f")
    locks.acquire(mesh, [target], "alpha", mode="read")
    locks.acquire(mesh, [target], "beta", mode="read")
    with pytest.raises(NegativeOutcome) as denied:
        locks.acquire(mesh, [target], "alpha", mode="write")
    assert [c["holder"] for c in denied.value.details["conflicts"]] == ["beta"]
    assert [lock["mode"] for lock in locks.list_locks(mesh)] == ["read", "read"]
    locks.release(mesh, [target], "beta")
    [upgraded] = locks.acquire(mesh, [target], "alpha", mode="write")
    assert upgraded["mode"] == "write"
    locks.acquire(mesh, [target], "alpha", mode="read")
    locks.acquire(mesh, [target], "beta", mode="read")


def test_directory_lock_conflicts_with_file_lock_both_ways(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    (tmp_path / "src").mkdir()
    cli.json("lock", "src/a.py", "--as", "alpha", cwd=tmp_path)
    done = cli.run("lock", "src/", "--as", "beta", "--json", cwd=tmp_path)
    assert done.returncode == 1
    [conflict] = json.loads(done.stdout)["error"]["conflicts"]
    assert conflict["path"] == str(tmp_path.resolve() / "src" / "a.py")
    assert conflict["holder"] == "alpha"
    cli.json("unlock", "src/a.py", "--as", "alpha", cwd=tmp_path)

    cli.json("lock", "src/", "--as", "beta", cwd=tmp_path)
    done = cli.run("lock", "src/a.py", "--as", "alpha", cwd=tmp_path)
    assert done.returncode == 1
    assert "beta holds a write lock on" in done.stderr
    assert str(tmp_path.resolve() / "src") in done.stderr
    assert cli.run("lock", "srcx/a.py", "--as", "alpha", cwd=tmp_path).returncode == 0


def test_coverage_compares_whole_components() -> None:
    assert locks.covers("/a/b", "/a/b/c")
    assert locks.covers("/a/b", "/a/b")
    assert not locks.covers("/a/b", "/a/bc")
    assert not locks.covers("/a/b/c", "/a/b")
    assert locks.covers("/", "/anything")
    assert locks.overlaps("/a/b/c", "/a/b")


def test_agents_in_other_directories_and_through_symlinks_agree(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha", "beta")
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (tmp_path / "link").symlink_to(repo)
    cli.json("lock", "pkg/mod.py", "--as", "alpha", cwd=repo)
    for cwd, path in ((repo / "pkg", "mod.py"), (tmp_path, "link/pkg/mod.py")):
        done = cli.run("lock", path, "--as", "beta", cwd=cwd)
        assert done.returncode == 1, done.stderr
    [held] = cli.json("locks")
    assert held["path"] == os.path.realpath(repo / "pkg" / "mod.py")


def test_several_paths_are_granted_all_or_none(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    locks.acquire(mesh, [two], "alpha")
    with pytest.raises(NegativeOutcome):
        locks.acquire(mesh, [one, two], "beta")
    assert [lock["path"] for lock in locks.list_locks(mesh)] == [two]
    locks.release(mesh, [two], "alpha")
    granted = locks.acquire(mesh, [one, two, one], "beta")
    assert [lock["path"] for lock in granted] == [one, two]


def test_locking_again_renews_and_keeps_acquired_at(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    target = str(tmp_path / "f")
    [first] = locks.acquire(mesh, [target], "alpha", ttl=10)
    time.sleep(0.05)
    [again] = locks.acquire(mesh, [target], "alpha", ttl=100)
    assert again["acquired_at"] == first["acquired_at"]
    assert again["expires_at"] > first["expires_at"]
    assert len(locks.list_locks(mesh)) == 1


def test_denial_names_holder_mode_and_expiry(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    cli.json("lock", target, "--mode", "intent", "--ttl", "90", "--as", "alpha")
    [held] = cli.json("locks")  # a registered holder's lease runs from its last heartbeat
    done = cli.run("lock", target, "--as", "beta", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    [conflict] = error["conflicts"]
    assert conflict["holder"] == "alpha"
    assert conflict["mode"] == "intent"
    assert conflict["expires_at"] == held["expires_at"]
    for part in ("alpha", "intent", held["expires_at"], "--wait"):
        assert part in error["message"]
    human = cli.run("lock", target, "--as", "beta")
    assert human.returncode == 1
    assert human.stdout == ""
    assert human.stderr.startswith("error: write lock on")
    assert held["expires_at"] in human.stderr


def test_wait_is_granted_when_the_holder_lets_go(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("beta", "alpha")
    target = str(tmp_path / "f")
    holder = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--", "sleep", "3"), env=cli.env
    )
    _wait_for_lock(cli, target)
    [granted] = cli.json("lock", target, "--as", "beta", "--wait", "30")
    assert granted["holder"] == "beta"
    assert holder.wait(timeout=30) == 0


def test_wait_times_out_with_the_conflicts_and_does_not_spin(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    cli.json("lock", target, "--as", "alpha")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = cli.run("lock", target, "--as", "beta", "--wait", "2", "--json")
    waited = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "lock-wait-timeout"
    assert error["conflicts"][0]["holder"] == "alpha"
    assert waited >= 2
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.2, f"waiting 2 s burnt {cpu:.2f} s of CPU"


def test_command_runs_holding_the_lock_and_its_exit_code_passes_through(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha")
    target = str(tmp_path / "f")
    script = f'mesh_locks=$({" ".join(cli.argv("locks", "--json"))}); echo "$mesh_locks"; exit 7'
    # A process: the command writes to the runner's own stdout.
    done = cli.run("lock", target, "--as", "alpha", "--", "sh", "-c", script, process=True)
    assert done.returncode == 7, done.stderr
    [seen] = json.loads(done.stdout)
    assert (seen["path"], seen["holder"]) == (target, "alpha")
    assert cli.json("locks") == []


def test_command_sees_arguments_after_double_dash_untouched(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha", "x")
    done = cli.run(
        "lock", str(tmp_path / "f"), "--as", "alpha", "--", "echo", "--json", "--as", "x",
        process=True,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == "--json --as x\n"


# The release after a command is covered on both by test_command_runs_holding_the_lock_...
def test_command_not_found_exits_127_and_releases(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha")
    done = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--json", "--", "no-such-cmd-x")
    assert done.returncode == 127
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "command-not-found"
    assert "no-such-cmd-x" in error["message"]
    assert cli.json("locks") == []
    human = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--", "/nonexistent/cmd")
    assert human.returncode == 127
    assert human.stdout == ""
    assert human.stderr.startswith("error: ")
    assert "/nonexistent/cmd" in human.stderr
    assert cli.json("locks") == []


# The release after a command is covered on both by test_command_runs_holding_the_lock_...
def test_command_not_executable_exits_126_and_releases(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha")
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    for command in (str(script), str(tmp_path)):  # a file without +x, a folder
        done = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--json", "--", command)
        assert done.returncode == 126, (command, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "command-not-executable"
        assert command in error["message"]
        assert cli.json("locks") == []
    human = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--", str(script))
    assert human.returncode == 126
    assert human.stderr.startswith("error: ") and str(script) in human.stderr


def test_wait_inf_waits_until_granted(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("beta", "alpha")
    target = str(tmp_path / "f")
    holder = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--", "sleep", "2"), env=cli.env
    )
    _wait_for_lock(cli, target)
    started = time.monotonic()
    [granted] = cli.json("lock", target, "--as", "beta", "--wait", "inf")
    assert granted["holder"] == "beta"
    assert time.monotonic() - started > 0.5  # it waited for alpha to let go
    assert holder.wait(timeout=30) == 0


def test_ttl_over_30_days_exits_2_naming_the_limit(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha")
    before = cli.snapshot()
    for ttl in ("1e12", "1e300", "2592001"):
        done = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--ttl", ttl, "--json")
        assert done.returncode == 2, (ttl, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "invalid-ttl"
        assert "2592000" in error["message"]
        human = cli.run("lock", str(tmp_path / "f"), "--as", "alpha", "--ttl", ttl)
        assert human.returncode == 2
        assert human.stderr.startswith("error: --ttl") and "Traceback" not in human.stderr
    assert cli.snapshot() == before
    [held] = cli.json("lock", str(tmp_path / "f"), "--as", "alpha", "--ttl", "2592000")
    assert held["ttl"] == 2592000


def test_config_default_ttl_is_bounded_where_used(mesh_dir: Path, tmp_path: Path) -> None:
    for default_ttl in (1e12, 1e300, float("inf")):
        mesh = Mesh.open(mesh_dir, Config(locks=LocksConfig(default_ttl=default_ttl)))
        register(mesh, "alpha", "beta", "gamma")
        with pytest.raises(InvalidInput) as caught:
            locks.acquire(mesh, [str(tmp_path / "f")], "alpha")
        assert caught.value.code == "invalid-config"
        assert "locks.default_ttl" in caught.value.message
        assert "2592000" in caught.value.message
        assert locks.list_locks(mesh) == []
        # An explicit --ttl does not need the default.
        assert locks.acquire(mesh, [str(tmp_path / "f")], "alpha", ttl=5)[0]["ttl"] == 5
        locks.release(mesh, [str(tmp_path / "f")], "alpha")


def test_renewal_caps_an_oversized_stored_ttl(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    target = str(tmp_path / "f")
    [held] = locks.acquire(mesh, [target], "alpha", ttl=10)
    rel = layout.lock_record(held["path"], "alpha")
    store = directory_of(mesh).store
    stored = store.read(rel)
    assert stored is not None
    store.write(rel, {**stored, "ttl": 1e300})  # hand-edited, or written by an older version
    [renewed] = locks.renew(mesh, [target], "alpha")
    assert renewed["ttl"] == locks.MAX_TTL_S


def test_command_renews_the_lease_while_it_runs(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    holder = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--ttl", "2", "--", "sleep", "6"), env=cli.env
    )
    _wait_for_lock(cli, target)
    with cli.open() as mesh:
        [first] = locks.list_locks(mesh)
        while time.time() < clock.parse_iso(first["expires_at"]) + 1:
            time.sleep(0.1)
        with pytest.raises(NegativeOutcome):
            locks.acquire(mesh, [target], "beta")
        [later] = locks.list_locks(mesh)
        assert later["expires_at"] > first["expires_at"]
        assert later["acquired_at"] == first["acquired_at"]
        assert holder.wait(timeout=60) == 0
        assert locks.acquire(mesh, [target], "beta")[0]["holder"] == "beta"


def test_sigkilled_holder_frees_the_lock_when_the_lease_runs_out(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    holder = subprocess.Popen(
        cli.argv("lock", target, "--as", "alpha", "--ttl", "3", "--", "sleep", "100"),
        env=cli.env,
        start_new_session=True,
    )
    try:
        _wait_for_lock(cli, target)
        with cli.open() as mesh:
            with pytest.raises(NegativeOutcome):
                locks.acquire(mesh, [target], "beta")
            [killed] = locks.list_locks(mesh)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        [granted] = cli.json("lock", target, "--as", "beta", "--wait", "30")
        assert granted["holder"] == "beta"
        assert granted["acquired_at"] >= killed["expires_at"]
        assert _stored_holders(cli) == ["beta"]
    finally:
        # The group is empty when the holder was killed before it spawned `sleep`.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)


def test_dead_registered_holder_blocks_no_one(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("beta")
    target = str(tmp_path / "f")
    cli.json("register", "alpha", "--pid", str(dead_pid()))
    cli.json("lock", target, "--as", "alpha", "--ttl", "600")
    [listed] = cli.json("locks")
    assert (listed["holder"], listed["stale"]) == ("alpha", True)
    with cli.open() as mesh:
        assert locks.is_stale(mesh, listed)
    assert "stale" in cli.run("locks").stdout
    [granted] = cli.json("lock", target, "--as", "beta")
    assert granted["holder"] == "beta"
    assert _stored_holders(cli) == ["beta"]


def test_live_registered_holder_blocks(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    cli.json("register", "alpha", "--pid", str(os.getpid()))
    cli.json("lock", target, "--as", "alpha")
    assert cli.run("lock", target, "--as", "beta").returncode == 1


def test_unlock_only_your_own(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    cli.json("lock", target, "--as", "alpha")
    done = cli.run("unlock", target, "--as", "beta", "--json")
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "lock-not-yours"
    assert "--force" in error["message"]
    missing = cli.run("unlock", str(tmp_path / "other"), "--as", "alpha", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["code"] == "lock-not-found"
    both = cli.run("unlock", target, str(tmp_path / "other"), "--as", "alpha")
    assert both.returncode == 3
    assert len(cli.json("locks")) == 1
    [released] = cli.json("unlock", target, "--as", "alpha")
    assert released["holder"] == "alpha"
    assert cli.json("locks") == []


def test_force_unlock_takes_an_unregistered_holders_lock(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha", "beta")
    target = str(tmp_path / "f")
    cli.json("lock", target, "--as", "alpha")
    [taken] = cli.json("unlock", target, "--as", "beta", "--force")
    assert taken["holder"] == "alpha"
    assert cli.json("locks") == []
    with cli.open() as mesh:
        events = [e for e in audit.read_events(mesh) if e["event"] == "unlock"]
    assert events[-1]["actor"] == "beta"
    assert events[-1]["forced_from"] == ["alpha"]


def test_force_unlock_tells_a_registered_holder(cli: MeshRunner, tmp_path: Path) -> None:
    target = str(tmp_path / "f")
    cli.json("register", "alpha", "--pid", str(os.getpid()))
    cli.json("lock", target, "--as", "alpha")
    cli.json("unlock", target, "--as", "beta", "--force")
    with cli.open() as mesh:
        message = messages.consume(mesh, "alpha")
    assert message is not None
    assert message["from"] == "beta"
    assert target in message["body"]
    assert "force-unlocked" in message["body"]


@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "exclusive", "--as", "alpha"],
        ["--ttl", "-5", "--as", "alpha"],
        ["--ttl", "0", "--as", "alpha"],
        ["--wait", "-1", "--as", "alpha"],
        ["--wait", "nan", "--as", "alpha"],
        ["--ttl", "1e12", "--as", "alpha"],
        ["--ttl", "1e300", "--as", "alpha"],
        ["--ttl", "inf", "--as", "alpha"],
        ["--ttl", "soon", "--as", "alpha"],
        ["--as", "Bad Name"],
        [],
        ["--as", "alpha", "--"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    cli: MeshRunner, tmp_path: Path, args: list[str]
) -> None:
    cli.register("alpha")
    cli.json("lock", str(tmp_path / "held"), "--as", "alpha")
    before = cli.snapshot()
    done = cli.run("lock", str(tmp_path / "f"), "--json", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "error" in json.loads(done.stdout)
    assert cli.snapshot() == before


def test_bad_input_through_the_api(mesh: Mesh, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        locks.acquire(mesh, [str(tmp_path / "f")], "alpha", mode="exclusive")
    with pytest.raises(InvalidInput):
        locks.acquire(mesh, [], "alpha")
    with pytest.raises(InvalidInput):
        locks.acquire(mesh, [""], "alpha")
    with pytest.raises(InvalidInput):
        locks.acquire(mesh, [str(tmp_path / "f")], "alpha", ttl=float("nan"))
    assert not directory_of(mesh).root.exists()


def test_release_all_and_clear_stale_are_idempotent(mesh_dir: Path, tmp_path: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config())
    register(mesh, "alpha", "beta", "gamma")
    locks.acquire(mesh, [str(tmp_path / "a"), str(tmp_path / "b")], "alpha")
    locks.acquire(mesh, [str(tmp_path / "c")], "beta", ttl=0.05)
    locks.acquire(mesh, [str(tmp_path / "d")], "gamma")
    time.sleep(0.1)

    listed = locks.list_locks(mesh)
    assert [(lock["holder"], lock["stale"]) for lock in listed] == [
        ("alpha", False),
        ("alpha", False),
        ("beta", True),
        ("gamma", False),
    ]
    assert [locks.is_stale(mesh, lock) for lock in listed] == [False, False, True, False]
    assert [lock["holder"] for lock in locks.clear_stale(mesh, dry_run=True)] == ["beta"]
    assert [lock["holder"] for lock in locks.clear_stale(mesh)] == ["beta"]
    assert locks.clear_stale(mesh) == []

    assert len(locks.release_all(mesh, "alpha", dry_run=True)) == 2
    assert len(locks.release_all(mesh, "alpha")) == 2
    assert locks.release_all(mesh, "alpha") == []
    assert [lock["holder"] for lock in locks.list_locks(mesh)] == ["gamma"]
    cleared = [e for e in audit.read_events(mesh) if e["event"] == "lock-cleared"]
    assert {(e["holder"], e["reason"]) for e in cleared} == {
        ("beta", "stale"),
        ("alpha", "holder-gone"),
    }


def test_clear_stale_drops_dead_agents_locks(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "alpha", "--pid", str(dead_pid()))
    cli.json("lock", str(tmp_path / "f"), "--as", "alpha")
    with cli.open() as mesh:
        assert [lock["holder"] for lock in locks.clear_stale(mesh)] == ["alpha"]
        assert locks.clear_stale(mesh) == []


def test_expired_lease_stops_renewal_from_reviving_it(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    target = str(tmp_path / "f")
    locks.acquire(mesh, [target], "alpha", ttl=0.05)
    time.sleep(0.1)
    locks.acquire(mesh, [target], "beta")
    assert locks.renew(mesh, [target], "alpha") == []
    assert [lock["holder"] for lock in locks.list_locks(mesh)] == ["beta"]


def test_hold_releases_and_reports_a_lock_taken_meanwhile(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    # A lease long enough that a late renewal (the renewer runs every ttl/3) cannot let `two`
    # expire on a loaded machine: the renewal that notices `one` is gone also renews `two`.
    with locks.hold(mesh, [one, two], "alpha", ttl=3) as lease:
        [granted] = [lock for lock in locks.list_locks(mesh) if lock["path"] == two]
        locks.release(mesh, [one], "beta", force=True)
        assert wait_until(lambda: lease.lost == [one], 10), lease.lost
        assert lease.errors == []
        [kept] = locks.list_locks(mesh)
        assert kept["path"] == two and not kept["stale"]
        assert clock.parse_iso(kept["expires_at"]) > clock.parse_iso(granted["expires_at"])
    assert locks.list_locks(mesh) == []


@pytest.mark.directory_only("plants damaged lock files")
def test_damaged_lock_record_is_quarantined_not_fatal(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha")
    cli.json("lock", str(tmp_path / "f"), "--as", "alpha")
    (cli.mesh_dir / "locks" / "junk.json").write_text("{not json")
    forged = cli.mesh_dir / "locks" / ("0" * 64 + "-beta.json")
    forged.write_text(json.dumps({"path": "/x", "holder": "beta", "mode": "write"}))
    done = cli.run("locks", "--json")
    assert done.returncode == 0
    assert [lock["holder"] for lock in json.loads(done.stdout)] == ["alpha"]
    assert done.stderr.count("quarantined") == 2
    assert len(list((cli.mesh_dir / "quarantine").iterdir())) == 2


def test_locks_lists_human_table(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alpha")
    assert "no locks" in cli.run("locks").stdout
    cli.json("lock", str(tmp_path / "f"), "--as", "alpha", "--mode", "read")
    done = cli.run("locks", "--as", "alpha")
    assert done.returncode == 0
    assert "alpha (you)" in done.stdout
    assert "read" in done.stdout


def _wait_for_lock(cli: MeshRunner, target: str, timeout: float = 30) -> None:
    with cli.open() as mesh:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if mesh.backend.exists() and any(
                lock["path"] == target for lock in locks.list_locks(mesh)
            ):
                return
            time.sleep(0.02)
    raise AssertionError(f"no lock on {target} appeared within {timeout}s")


def _stored_holders(cli: MeshRunner) -> list[str]:
    """The holder of every lock the mesh keeps (stale ones included), sorted."""
    with cli.open() as mesh:
        return sorted(lock["holder"] for lock in mesh.backend.locks.all())


def test_missing_lock_on_unlock_api(mesh: Mesh, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        locks.release(mesh, [str(tmp_path / "f")], "alpha")


def test_a_lock_decision_asks_about_no_agent_inside_the_lock_table(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 point 1: liveness and last signs of life of the holders (agent records,
    heartbeats, pid and session probes) are looked up before the lock table's exclusion; the
    decision inside it only compares."""
    from drasill_cli import agents

    table = mesh.backend.locks
    deciding = [False]
    asked: list[bool] = []
    real_transact = table.transact

    def transact(decide: Any) -> Any:
        def watched(records: Any) -> Any:
            deciding[0] = True
            try:
                return decide(records)
            finally:
                deciding[0] = False

        return real_transact(watched)

    presence = mesh.backend.presence
    for method in ("get", "last_seen", "is_registered"):
        real = getattr(presence, method)

        def spy(*args: Any, real: Any = real) -> Any:
            asked.append(deciding[0])
            return real(*args)

        monkeypatch.setattr(presence, method, spy)
    monkeypatch.setattr(table, "transact", transact)
    agents.register(mesh, "alpha", pid=os.getpid())
    agents.register(mesh, "beta", pid=os.getpid())
    target = tmp_path / "f.txt"
    target.write_text("x")
    locks.acquire(mesh, [str(target)], "alpha")
    with pytest.raises(NegativeOutcome):
        locks.acquire(mesh, [str(target)], "beta")
    with pytest.raises(NegativeOutcome):
        locks.release(mesh, [str(target)], "beta")
    locks.renew(mesh, [str(target)], "alpha")
    locks.clear_stale(mesh)
    locks.release(mesh, [str(target)], "alpha")
    assert asked
    assert not any(asked), "an agent was looked up inside the lock table's exclusion"
