"""`mesh hooks install|uninstall|status`: the mesh's entries merged into each agent CLI's own
settings file, every other entry kept, idempotent, uninstall exact, dry runs write nothing,
files written atomically, never through a link, keeping their mode.

These commands never open the mesh (they touch only the CLIs' settings files), so the module
is not `both_backends`: a database mesh would run the very same code twice."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drasill_cli.hooks import install
from tests.conftest import MeshRunner
from tests.wake_support import needs_tmux

pytest_plugins = ["tests.wake_fixtures"]  # tmux_tmpdir

CLIS = ("claude", "codex", "gemini", "copilot")
PROJECT_FILE = {
    "claude": ".claude/settings.json",
    "codex": ".codex/hooks.json",
    "gemini": ".gemini/settings.json",
    "copilot": ".github/hooks/drasill-mesh.json",
}
THEIRS = {  # a settings file with entries of the user's own
    "permissions": {"allow": ["Bash(ls:*)"]},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "./audit.sh"}]}
        ],
        "Notification": [{"hooks": [{"type": "command", "command": "notify-send hi"}]}],
    },
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    top = tmp_path / "repo"
    (top / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    return top


def run(cli: MeshRunner, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run("hooks", *args, cwd=repo / "sub")  # from inside the tree: its top is used


def commands(data: dict[str, Any]) -> list[str]:
    return [
        handler.get("command", handler.get("bash"))
        for groups in data.get("hooks", {}).values()
        for group in groups
        for handler in group.get("hooks", [group])
    ]


@pytest.mark.parametrize("cli_name", CLIS)
def test_install_merges_keeps_others_is_idempotent_and_uninstall_is_exact(
    cli: MeshRunner, repo: Path, cli_name: str
) -> None:
    path = repo / PROJECT_FILE[cli_name]
    if cli_name != "copilot":  # copilot's file is the mesh's own
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(THEIRS, indent=2) + "\n")
    before = path.read_text() if path.exists() else None
    done = run(cli, repo, "install", cli_name)
    assert done.returncode == 0, done.stderr
    assert str(path) in done.stdout
    first = path.read_text()
    data = json.loads(first)
    ours = [c for c in commands(data) if " hook " in c]
    assert ours and all(c.startswith("mesh hook " + cli_name + " ") for c in ours)
    if before is not None:
        assert data["permissions"] == THEIRS["permissions"]
        assert {"./audit.sh", "notify-send hi"} <= set(commands(data))
    again = cli.json("hooks", "install", cli_name, cwd=repo)
    assert again["changed"] is False and path.read_text() == first
    status = {
        (row["cli"], row["scope"]): row for row in cli.json("hooks", "status", cwd=repo)["entries"]
    }
    assert status[(cli_name, "project")]["installed"] is True
    assert status[(cli_name, "user")]["installed"] is False
    gone = cli.json("hooks", "uninstall", cli_name, cwd=repo)
    assert gone["changed"] is True
    if before is None:
        assert gone["removed"] is True and not path.exists()
    else:
        assert json.loads(path.read_text()) == THEIRS
    assert cli.json("hooks", "uninstall", cli_name, cwd=repo)["changed"] is False


def test_user_scope_writes_into_the_home_folder(cli: MeshRunner, repo: Path) -> None:
    found = cli.json("hooks", "install", "gemini", "--scope", "user", cwd=repo)
    path = Path(cli.env["HOME"]) / ".gemini" / "settings.json"
    assert found["path"] == str(path)
    data = json.loads(path.read_text())
    assert data["hooks"]["BeforeTool"][0]["hooks"][0]["timeout"] == 10_000  # milliseconds
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a new file in the home: private
    assert not (repo / ".gemini").exists()


def test_dry_run_prints_the_file_and_writes_nothing(cli: MeshRunner, repo: Path) -> None:
    done = run(cli, repo, "install", "claude", "--dry-run")
    assert done.returncode == 0
    assert "mesh hook claude pre-tool" in json.dumps(json.loads(done.stdout))
    assert not (repo / ".claude").exists()
    cli.json("hooks", "install", "claude", cwd=repo)
    path = repo / PROJECT_FILE["claude"]
    text = path.read_text()
    done = run(cli, repo, "uninstall", "claude", "--dry-run")
    assert done.returncode == 0 and "would be removed" in done.stderr
    assert path.read_text() == text


def test_the_files_mode_is_kept(cli: MeshRunner, repo: Path) -> None:
    path = repo / PROJECT_FILE["claude"]
    path.parent.mkdir()
    path.write_text("{}\n")
    path.chmod(0o640)
    cli.json("hooks", "install", "claude", cwd=repo)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    new = repo / PROJECT_FILE["codex"]
    cli.json("hooks", "install", "codex", cwd=repo)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_link_is_refused_and_nothing_is_written(
    cli: MeshRunner, repo: Path, tmp_path: Path, where: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "settings.json").write_text("{}\n")
    if where == "file":
        (repo / ".claude").mkdir()
        (repo / ".claude" / "settings.json").symlink_to(elsewhere / "settings.json")
    else:
        (repo / ".claude").symlink_to(elsewhere)
    done = run(cli, repo, "install", "claude")
    assert done.returncode == 2
    assert "symbolic link" in done.stderr and "retry" in done.stderr
    assert (elsewhere / "settings.json").read_text() == "{}\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("install", "aider"), "unknown CLI 'aider'"),
        (("install", "claude", "--scope", "team"), "unknown scope 'team'"),
        (("uninstall", "vim"), "unknown CLI 'vim'"),
    ],
)
def test_bad_input_exits_2_with_the_fix(
    cli: MeshRunner, repo: Path, args: tuple[str, ...], says: str
) -> None:
    done = run(cli, repo, *args)
    assert done.returncode == 2 and says in done.stderr
    assert not any(repo.glob(".*/*.json"))


def test_a_broken_settings_file_is_refused_and_kept(cli: MeshRunner, repo: Path) -> None:
    path = repo / PROJECT_FILE["claude"]
    path.parent.mkdir()
    path.write_text('{"hooks": [')
    done = cli.run("hooks", "install", "claude", "--json", cwd=repo)
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid-settings" and "not valid JSON" in error["message"]
    assert path.read_text() == '{"hooks": ['


def test_project_scope_outside_a_work_tree_exits_2(cli: MeshRunner, tmp_path: Path) -> None:
    done = cli.run("hooks", "install", "claude", cwd=tmp_path)
    assert done.returncode == 2 and "--scope user" in done.stderr
    report = cli.json("hooks", "status", cwd=tmp_path)
    assert report["project"] is None
    assert {row["scope"] for row in report["entries"]} == {"user"}


def test_status_reports_codex_trust(cli: MeshRunner, repo: Path) -> None:
    cli.json("hooks", "install", "codex", "--scope", "user", cwd=repo)
    [row] = [
        row
        for row in cli.json("hooks", "status", cwd=repo)["entries"]
        if (row["cli"], row["scope"]) == ("codex", "user")
    ]
    assert row["installed"] is True and row["trusted"] is False and row["untrusted"]
    config = Path(cli.env["HOME"]) / ".codex" / "config.toml"
    config.write_text(
        "".join(f'[hooks.state."{key}"]\ntrusted_hash = "sha256:00"\n' for key in row["untrusted"])
    )
    [row] = [
        row
        for row in cli.json("hooks", "status", cwd=repo)["entries"]
        if (row["cli"], row["scope"]) == ("codex", "user")
    ]
    assert row["trusted"] is True
    shown = cli.run("hooks", "status", cwd=repo)
    assert shown.returncode == 0 and "codex" in shown.stdout


def test_the_hooks_call_this_mesh_when_another_or_none_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "venv" / "bin" / "mesh"
    here.parent.mkdir(parents=True)
    here.write_text("#!/bin/sh\n")
    here.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert install.program(str(here)) == str(here)  # not on PATH: the absolute path
    monkeypatch.setenv("PATH", str(here.parent))
    assert install.program(str(here)) == "mesh"  # the one on PATH: portable
    assert install.program("/usr/lib/python3/drasill_cli/__main__.py") == "mesh"
    assert install.program(os.path.join(str(tmp_path), "a b", "mesh")) == "mesh"  # no quoting


# A stand-in for `claude`: sleeps in its pane (the launch only has to start it).
FAKE_CLAUDE = "#!/bin/sh\nsleep 60\n"


@pytest.fixture
def fake_claude(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(FAKE_CLAUDE)
    (bin_dir / "claude").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def hooks_check(cli: MeshRunner, repo: Path, env: dict[str, str]) -> dict[str, Any]:
    report = cli.json("doctor", cwd=repo, env=env)
    [check] = [check for check in report["checks"] if check["name"] == "hooks"]
    assert check["required"] is False
    return dict(check)


def test_doctor_reports_missing_hooks_and_untrusted_codex_ones(
    cli: MeshRunner, repo: Path, fake_claude: dict[str, str]
) -> None:
    check = hooks_check(cli, repo, fake_claude)
    assert check["status"] == "warn" and "claude: no mesh hooks" in check["detail"]
    cli.json("hooks", "install", "claude", cwd=repo)
    assert hooks_check(cli, repo, fake_claude)["status"] == "ok"
    cli.json("hooks", "install", "codex", "--scope", "user", cwd=repo)
    check = hooks_check(cli, repo, fake_claude)
    assert check["status"] == "warn" and "not trusted yet" in check["detail"]


@needs_tmux
def test_launch_hints_at_the_hooks_and_installs_them_with_the_flag(
    cli: MeshRunner, repo: Path, fake_claude: dict[str, str], tmux_tmpdir: Path
) -> None:
    env = {**fake_claude, "TMUX_TMPDIR": str(tmux_tmpdir)}
    done = cli.run("launch", "alpha", "--backend", "tmux", "--json", env=env, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hooks"]["installed"] is False
    assert "mesh hooks install claude" in done.stderr
    assert not (repo / ".claude").exists()
    done = cli.run("launch", "bravo", "--backend", "tmux", "--hooks", env=env, cwd=repo)
    assert done.returncode == 0, done.stderr
    path = repo / PROJECT_FILE["claude"]
    assert f"hooks installed in {path}" in done.stderr
    assert "mesh hook claude pre-tool" in path.read_text()
    for session in ("mesh-alpha", "mesh-bravo"):
        subprocess.run(["tmux", "kill-session", "-t", f"={session}"], check=False)
