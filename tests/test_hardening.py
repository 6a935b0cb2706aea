"""Odd inputs and damaged meshes: clean errors, nothing written, no tracebacks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drasill_cli.backends.directory.store import FileStore
from drasill_cli.config import load_config
from drasill_cli.errors import InvalidInput, MeshUnusable
from tests.conftest import MeshRunner, tree


def test_mesh_dir_inside_a_file_is_refused(cli: MeshRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for args in (
        ["--mesh-dir", str(blocker / "sub"), "register", "a", "--json"],
        ["--mesh-dir", str(blocker / "sub"), "status", "--json"],
        ["--mesh-dir", str(blocker / "sub"), "agents", "--json"],
    ):
        done = cli.run(*args)
        assert done.returncode == 4, (args, done.stderr)
        assert json.loads(done.stdout)["error"]["code"] == "mesh-dir-not-directory"
        assert "Traceback" not in done.stderr


def test_damaged_meta_refuses_the_folder_and_touches_nothing(cli: MeshRunner) -> None:
    cli.json("register", "a")
    (cli.mesh_dir / "meta.json").write_text("zzz")
    before = sorted(str(p) for p in cli.mesh_dir.rglob("*"))
    done = cli.run("register", "b", "--json")
    assert done.returncode == 4
    assert json.loads(done.stdout)["error"]["code"] == "not-a-mesh"
    assert sorted(str(p) for p in cli.mesh_dir.rglob("*")) == before
    assert (cli.mesh_dir / "meta.json").read_text() == "zzz"


def test_group_shared_files_are_group_writable_whatever_the_umask(cli: MeshRunner) -> None:
    cli.config("group_shared = true\n")
    script = (
        "import os, sys; os.umask(0o077); sys.argv = ['mesh', *sys.argv[1:]];"
        "from drasill_cli.cli.app import main; main()"
    )
    for args in (["register", "a"], ["task", "add", "t", "--as", "a"], ["heartbeat", "--as", "a"]):
        done = subprocess.run(
            [sys.executable, "-c", script, *args], env=cli.env, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
    for path in cli.mesh_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        # Agent records are sealed: readable by the group, writable only by their owner, whose
        # ownership then proves who wrote them (budget enforcement relies on it).
        sealed = path.parent.name == "agents" and path.suffix == ".json"
        expected = 0o2770 if path.is_dir() else 0o640 if sealed else 0o660
        assert mode == expected, (path, oct(mode))


def test_symlinked_folder_is_not_read_through(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.json").write_text(json.dumps({"name": "evil"}))
    agents_dir = cli.mesh_dir / "agents"
    agents_dir.rename(tmp_path / "moved")
    agents_dir.symlink_to(outside)
    done = cli.run("agents", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert "quarantined agents (is a symlink" in done.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["evil.json"]
    assert not agents_dir.is_symlink()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[locks]\ndefault_ttl = inf\n", "finite"),
        ("[lifecycle]\nidle_after = nan\n", "finite"),
        ("[budgets]\nram_gb = nan\n", "finite"),
        ("[lifecycle]\nmax_attempts = 0\n", "max_attempts must be at least 1"),
        ("[lifecycle]\nidle_after = 100\ndead_after = 10\n", "less than lifecycle.dead_after"),
        ("[locks]\ndefault_ttl = 0\n", "default_ttl must be more than 0"),
        ("[budgets]\nram_gb = 0\n", "budgets.ram_gb must be more than 0"),
    ],
)
def test_config_rejects_nonsense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("DRASILL_CONFIG", str(path))
    with pytest.raises(InvalidInput, match=needle):
        load_config()


@pytest.mark.parametrize(
    "args",
    [
        ["register", "r", "--ram-gb", "inf"],
        ["register", "r", "--ram-gb", "1e400"],
        ["register", "r", "--vram-gb", "nan"],
        ["register", "r", "--pid", "9223372036854775808"],
        ["register", "r", "--pid", "0"],
    ],
)
def test_out_of_range_numbers_exit_2_with_valid_json(cli: MeshRunner, args: list[str]) -> None:
    done = cli.run(*args, "--json")
    assert done.returncode == 2, done.stderr
    json.loads(done.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert "Traceback" not in done.stderr


def test_refused_commands_do_not_touch_the_heartbeat(cli: MeshRunner) -> None:
    cli.json("register", "a")
    cli.json("register", "b")
    beat = cli.mesh_dir / "heartbeats" / "a"
    os.utime(beat, (1000, 1000))
    before = tree(cli.mesh_dir)
    for args in (
        ["send", "b", "", "--as", "a"],
        ["send", "b", "x", "--as", "a", "--priority", "bogus"],
        ["task", "add", "", "--as", "a"],
        ["task", "add", "x", "--depends", "t-nope", "--as", "a"],
    ):
        assert cli.run(*args).returncode == 2, args
    assert beat.stat().st_mtime == 1000
    assert tree(cli.mesh_dir) == before
    assert cli.run("inbox", "--as", "a").returncode == 1
    assert beat.stat().st_mtime > time.time() - 60, "a negative outcome is still a sign of life"


def test_empty_as_is_an_invalid_name_not_the_environment(cli: MeshRunner) -> None:
    cli.json("register", "a")
    done = cli.run("heartbeat", "--as", "", "--json", env={"DRASILL_AGENT": "a"})
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-name"


def test_errors_stay_on_one_line(cli: MeshRunner) -> None:
    done = cli.run("register", "bad\nname")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "'bad\\nname'" in done.stderr


def test_name_conflict_message_names_only_what_is_known(cli: MeshRunner) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        cli.json("register", "a", "--pid", str(holder.pid))
        done = cli.run("register", "a", "--pid", str(os.getpid()))
        assert done.returncode == 1
        assert "None" not in done.stderr
        assert f"held by pid {holder.pid} on" in done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_symlinked_audit_log_is_set_aside_and_the_change_logged(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "a")
    log = cli.mesh_dir / "audit" / "events.jsonl"
    log.unlink()
    log.symlink_to(tmp_path / "elsewhere.jsonl")
    doctor = cli.run("doctor", "--json")
    assert doctor.returncode == 1
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["mesh-entries"]["status"] == "fail"
    done = cli.run("register", "c", "--json")
    assert done.returncode == 0
    assert "quarantined audit/events.jsonl (is a symlink" in done.stderr
    assert (cli.mesh_dir / "agents" / "c.json").exists()
    assert not (tmp_path / "elsewhere.jsonl").exists()
    assert not log.is_symlink()
    assert '"actor":"c"' in log.read_text()


def test_an_unwritable_audit_log_warns_but_the_change_stands(cli: MeshRunner) -> None:
    cli.json("register", "a")
    log = cli.mesh_dir / "audit" / "events.jsonl"
    if subprocess.run(["chattr", "+i", str(log)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        done = cli.run("register", "c", "--json")
    finally:
        subprocess.run(["chattr", "-i", str(log)], check=False)
    assert done.returncode == 0
    assert "could not append to the audit log" in done.stderr
    assert (cli.mesh_dir / "agents" / "c.json").exists()


def test_bare_mesh_prints_help(cli: MeshRunner) -> None:
    done = cli.run()
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: mesh")


def test_store_refuses_a_root_inside_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(MeshUnusable, match="inside a file"):
        FileStore.open(blocker / "mesh")
