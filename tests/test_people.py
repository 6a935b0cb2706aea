"""`mesh status`, `doctor`, `tools`, `demo`: what people see first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drasill_cli import doctor, tools
from drasill_cli.backends.directory import filesystem
from drasill_cli.config import Config
from drasill_cli.errors import InvalidInput
from tests.conftest import MeshRunner


def _populated(cli: MeshRunner, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.py").write_text("")
    cli.json("register", "alpha", "--role", "lead", "--tool", "claude")
    cli.json("register", "beta", "--role", "coder")
    task = cli.json("task", "add", "Write it", "--priority", "2")
    cli.json("task", "add", "Test it")
    cli.json("claim", task["id"], "--as", "beta")
    cli.json("lock", str(work / "a.py"), "--as", "beta")
    cli.json("send", "alpha", "hello", "--as", "beta")
    return work


def test_status_json_has_every_section(cli: MeshRunner, tmp_path: Path) -> None:
    work = _populated(cli, tmp_path)
    snap = cli.json("status")
    assert {"agents", "tasks", "locks", "budgets", "recent"} <= set(snap)
    by_name = {a["name"]: a for a in snap["agents"]}
    assert set(by_name) == {"alpha", "beta"}
    assert by_name["alpha"]["unread"] == 1
    assert by_name["alpha"]["state"] == "active"
    assert {"declared", "measured", "last_seen", "role", "tool"} <= set(by_name["alpha"])
    assert sorted(t["state"] for t in snap["tasks"]) == ["claimed", "queued"]
    assert snap["counts"]["tasks"] == {"claimed": 1, "queued": 1}
    assert [(lock["path"], lock["holder"]) for lock in snap["locks"]] == [
        (str((work / "a.py").resolve()), "beta")
    ]
    assert {"limit_gb", "declared_gb", "free_gb", "agents_gb"} <= set(snap["budgets"]["ram"])
    assert snap["recent"][0]["event"] == "send"  # newest first
    assert snap["recent"][0]["to"] == "alpha"


def test_status_screen_fits_80_columns(cli: MeshRunner, tmp_path: Path) -> None:
    _populated(cli, tmp_path)
    done = cli.run("status", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    for title in ("Agents", "Tasks", "Locks", "Budgets", "Recent"):
        assert title in done.stdout
    assert "beta -> alpha" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_status_of_a_new_mesh_writes_nothing(cli: MeshRunner, mesh_dir: Path) -> None:
    snap = cli.json("status")
    assert snap["agents"] == [] and snap["tasks"] == [] and snap["locks"] == []
    assert not mesh_dir.exists()


def test_status_recent_reads_only_the_tail(mesh_dir: Path) -> None:
    from drasill_cli import status
    from drasill_cli.mesh import Mesh

    mesh = Mesh.open(mesh_dir, Config())
    for i in range(3000):
        mesh.append_audit_event("note", "alpha", n=i)
    events = status.recent_events(mesh, limit=5)
    assert [e["n"] for e in events] == [2999, 2998, 2997, 2996, 2995]


def test_status_watch_streams_a_snapshot_per_change(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    proc = subprocess.Popen(
        cli.argv("status", "--watch", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["tasks"] == []
        cli.json("task", "add", "New work")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = json.loads(proc.stdout.readline())
            if snap["tasks"]:
                break
        assert [t["title"] for t in snap["tasks"]] == ["New work"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_status_watch_prints_plain_screens_when_not_a_terminal(cli: MeshRunner) -> None:
    import threading

    cli.json("register", "alpha")
    proc = subprocess.Popen(
        cli.argv("status", "--watch"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 30
        while not any(text in line for line in list(lines)):
            assert time.monotonic() < deadline, (text, lines)
            time.sleep(0.05)

    try:
        wait_for("mesh status")
        cli.json("task", "add", "New work")
        wait_for("New work")
        shown = list(lines)
        assert sum(1 for line in shown if line.startswith("mesh status")) >= 2
        assert sum(1 for line in shown if line.startswith("---- ")) >= 2
        assert not any("\x1b" in line for line in shown), "plain text, no terminal codes"
        assert max(len(line.rstrip("\n")) for line in shown) <= 80
    finally:
        proc.terminate()
        proc.wait(10)


# ---- doctor ----------------------------------------------------------------------------------


def test_doctor_passes_on_a_fresh_mesh(cli: MeshRunner, mesh_dir: Path) -> None:
    report = cli.json("doctor")
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    for expected in ("python", "config", "mesh-dir", "filesystem", "heimdall", "tmux", "git"):
        assert expected in names
    assert {"ai-clis", "nvml"} <= set(names)
    assert all(c["fix"] for c in report["checks"] if c["status"] != "ok")
    assert not mesh_dir.exists()  # doctor inspects, never creates


def test_doctor_fails_on_an_unsafe_mesh_dir_with_the_fix(cli: MeshRunner, mesh_dir: Path) -> None:
    mesh_dir.mkdir(mode=0o700)
    os.chmod(mesh_dir, 0o777)  # noqa: S103 -- the unsafe mesh dir under test
    done = cli.run("doctor")
    assert done.returncode == 1
    assert "FAIL mesh-dir" in done.stdout
    assert f"chmod o-rwx {mesh_dir}" in done.stdout
    report = json.loads(cli.run("doctor", "--json").stdout)
    check = next(c for c in report["checks"] if c["name"] == "mesh-dir")
    assert check["status"] == "fail" and check["required"] is True


def test_doctor_fails_on_a_broken_config(cli: MeshRunner) -> None:
    cli.config('[tools.x]\ncommand = ["x"]\n')
    done = cli.run("doctor", "--json")
    assert done.returncode == 1
    check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "config")
    assert check["status"] == "fail" and "{prompt}" in check["detail"]


MOUNTS = """\
proc /proc proc rw 0 0
/dev/sda1 / ext4 rw 0 0
server:/export /net/share nfs4 rw 0 0
//nas/x /mnt/my\\040files cifs rw 0 0
"""


def test_filesystem_of_picks_the_deepest_mount() -> None:
    assert filesystem.filesystem_of(Path("/net/share/mesh"), MOUNTS) == ("/net/share", "nfs4")
    assert filesystem.filesystem_of(Path("/net/sharex"), MOUNTS) == ("/", "ext4")
    assert filesystem.filesystem_of(Path("/mnt/my files/m"), MOUNTS) == ("/mnt/my files", "cifs")


def test_doctor_warns_on_a_network_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nsrv:/x {tmp_path} nfs rw 0 0\n")
    monkeypatch.setattr(filesystem, "MOUNTS", mounts)
    monkeypatch.delenv("DRASILL_MESH_URL", raising=False)
    # The directory backend's own check, part of its `Maintenance.check` that doctor shows.
    report = doctor.run(mesh_dir=tmp_path / "mesh")
    check = next(c for c in report["checks"] if c["name"] == "filesystem")
    assert check["status"] == "warn" and "nfs" in check["detail"]
    assert check["fix"] and not check["required"]
    assert not (tmp_path / "mesh").exists(), "doctor creates nothing"


# ---- tools -----------------------------------------------------------------------------------


def _fake_tool(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_builtin_profiles_run_the_documented_non_interactive_modes() -> None:
    known = tools.profiles(Config())
    assert known["claude"].argv("hi") == ["claude", "-p", "hi"]
    assert known["codex"].argv("hi") == ["codex", "exec", "hi"]
    assert known["gemini"].argv("hi") == ["gemini", "-p", "hi"]
    assert known["aider"].argv("hi") == ["aider", "--message", "hi", "--yes"]
    for profile in known.values():
        assert sum(part.count(tools.PLACEHOLDER) for part in profile.command) == 1


def test_tools_detects_clis_on_path_with_versions(cli: MeshRunner, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "claude", 'echo "9.9.9 (Claude Code)"\n')
    _fake_tool(bin_dir, "mycli", 'echo "mycli 1.0"\n')
    cli.config('[tools.mine]\ncommand = ["mycli", "--ask={prompt}"]\n')
    path = f"{bin_dir}:/usr/bin:/bin"
    rows = {row["name"]: row for row in cli.json("tools", env={"PATH": path})}
    assert rows["claude"]["installed"] and rows["claude"]["version"] == "9.9.9 (Claude Code)"
    assert rows["mine"]["installed"] and rows["mine"]["source"] == "config"
    assert rows["mine"]["command"] == ["mycli", "--ask={prompt}"]
    assert not rows["codex"]["installed"]
    human = cli.run("tools", env={"PATH": path})
    assert "9.9.9" in human.stdout


@pytest.mark.parametrize(
    "table",
    [
        'command = ["mycli"]',
        'command = ["mycli", "{prompt}", "{prompt}"]',
        'command = "mycli {prompt}"',
        "command = []",
        'command = ["mycli", 3]',
        'cmd = ["mycli", "{prompt}"]',
    ],
)
def test_bad_tool_profiles_are_refused(cli: MeshRunner, table: str) -> None:
    cli.config(f"[tools.mine]\n{table}\n")
    done = cli.run("tools", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-tool-profile"


def test_tool_profile_from_config_overrides_a_builtin() -> None:
    config = Config(tools={"claude": {"command": ["claude", "-p", "{prompt}", "--verbose"]}})
    assert tools.get(config, "claude").argv("x") == ["claude", "-p", "x", "--verbose"]
    with pytest.raises(InvalidInput):
        tools.get(config, "nonesuch")


# ---- demo ------------------------------------------------------------------------------------


def test_demo_runs_on_a_throwaway_mesh(cli: MeshRunner, mesh_dir: Path) -> None:
    began = time.monotonic()
    result = cli.json("demo")
    assert time.monotonic() - began < 20
    snap = result["status"]
    assert {a["name"] for a in snap["agents"]} == {"alpha", "beta", "gamma"}
    assert len(snap["locks"]) == 2
    assert {t["state"] for t in snap["tasks"]} >= {"working", "completed", "queued"}
    assert any(e["event"] == "send" for e in snap["recent"])
    assert not snap["mesh_dir"].startswith(str(mesh_dir))
    assert not Path(snap["mesh_dir"]).exists()  # thrown away
    assert not mesh_dir.exists()  # the user's mesh is never touched


def test_demo_shows_the_status_screen(cli: MeshRunner) -> None:
    done = cli.run("demo", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "Agents (3: 3 active)" in done.stdout
    assert "beta claims" in done.stderr


def test_core_modules_import_neither_typer_nor_rich() -> None:
    code = (
        "import sys\n"
        "from drasill_cli import bridge, demo, doctor, status, tools\n"
        "loaded = sorted(m for m in ('typer', 'rich') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_status_change_key_ignores_what_moves_by_itself(cli: MeshRunner) -> None:
    from drasill_cli import status
    from drasill_cli.mesh import Mesh

    cli.json("register", "alpha")
    mesh = Mesh.open(cli.mesh_dir, Config())
    first = status.snapshot(mesh)
    moved = {
        **first,
        "generated_at": "2099-01-01T00:00:00Z",
        "agents": [
            {**a, "last_seen": "2099-01-01T00:00:00Z", "measured": {"ram_gb": 9.9}}
            for a in first["agents"]
        ],
    }
    assert status.change_key(moved) == status.change_key(first)
    cli.json("task", "add", "New work")
    assert status.change_key(status.snapshot(mesh)) != status.change_key(first)
