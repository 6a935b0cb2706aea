"""Shell completion of live mesh values through the real protocol of bash, zsh and fish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MeshRunner
from tests.test_import_guard import HEAVY

MESH = Path(sys.executable).parent / "mesh"


def complete(cli: MeshRunner, shell: str, line: str, **env: str) -> list[str]:
    """The values `shell` would offer for the command line `line` (the cursor at its end)."""
    if shell == "bash":
        words = line.split()
        cword = len(words) if line.endswith(" ") else len(words) - 1
        extra = {"_MESH_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(cword)}
    elif shell == "zsh":
        extra = {"_MESH_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line}
    else:
        extra = {
            "_MESH_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": line,
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        }
    done = subprocess.run(
        [
            str(MESH) if MESH.exists() else sys.executable,
            *([] if MESH.exists() else ["-m", "drasill_cli"]),
        ],
        env={**cli.env, **extra, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if shell == "zsh":  # _arguments '*: :(("value":"help" ...))', or _files for nothing
        return [part.split('"')[1] for part in done.stdout.split("\n") if part.count('"') >= 2]
    return [line.split("\t")[0] for line in done.stdout.splitlines() if line]


@pytest.fixture
def busy(cli: MeshRunner, tmp_path: Path) -> dict[str, str]:
    cli.json("register", "alice", "--role", "lead")
    cli.json("register", "bob")
    queued = cli.json("task", "add", "fix the login test")["id"]
    claimed = cli.json("task", "add", "write docs")["id"]
    cli.json("claim", claimed, "--as", "bob")
    (tmp_path / "src").mkdir()
    cli.json("lock", str(tmp_path / "src"), "--as", "alice")
    return {"queued": queued, "claimed": claimed}


SHELLS = ("bash", "zsh", "fish")


@pytest.mark.parametrize("shell", SHELLS)
def test_agent_names_complete(cli: MeshRunner, busy: dict[str, str], shell: str) -> None:
    assert complete(cli, shell, "mesh send ") == ["all", "alice", "bob"]
    assert complete(cli, shell, "mesh inbox a") == ["alice"]
    assert complete(cli, shell, "mesh history ") == ["alice", "bob"]
    assert complete(cli, shell, "mesh locks --as b") == ["bob"]


@pytest.mark.parametrize("shell", SHELLS)
def test_task_ids_complete(cli: MeshRunner, busy: dict[str, str], shell: str) -> None:
    assert complete(cli, shell, "mesh claim ") == [busy["queued"]]
    offered = complete(cli, shell, "mesh task done ")
    assert set(offered) == {busy["queued"], busy["claimed"]}
    assert complete(cli, shell, "mesh task show " + busy["claimed"]) == [busy["claimed"]]


@pytest.mark.parametrize("shell", SHELLS)
def test_modes_states_tools_and_held_locks_complete(
    cli: MeshRunner, busy: dict[str, str], tmp_path: Path, shell: str
) -> None:
    del busy
    assert complete(cli, shell, "mesh lock x --mode ") == ["write", "read", "intent", "co_write"]
    assert complete(cli, shell, "mesh task list --state c") == ["claimed", "completed", "cancelled"]
    assert "claude" in complete(cli, shell, "mesh launch x --tool ")
    assert "codex" in complete(cli, shell, "mesh bridge --tool c")
    held = complete(cli, shell, "mesh unlock --as alice ")
    assert held == [str(tmp_path / "src")]
    assert complete(cli, shell, "mesh unlock --as bob ") == []
    assert complete(cli, shell, "mesh --install-completion ") == ["bash", "zsh", "fish"]


def test_held_locks_are_offered_relative_to_the_working_directory(
    cli: MeshRunner, busy: dict[str, str], tmp_path: Path
) -> None:
    del busy
    line = "mesh unlock --as alice "
    done = subprocess.run(
        [sys.executable, "-m", "drasill_cli"],
        env={**cli.env, "_MESH_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": "4"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split() == ["src"]


def test_completion_never_creates_a_mesh(cli: MeshRunner) -> None:
    assert complete(cli, "bash", "mesh send ") == ["all"]
    assert not cli.mesh_dir.exists()


def test_completion_loads_nothing_heavy(cli: MeshRunner, busy: dict[str, str]) -> None:
    """Completion runs on every TAB: no pydantic, rich or psutil (see bench_complete)."""
    del busy
    probe = (
        "import atexit, json, sys\n"
        "heavy = set(json.loads(sys.argv[1]))\n"
        "atexit.register(lambda: sys.__stderr__.write('LOADED ' + json.dumps(sorted("
        "{m.split('.')[0] for m in sys.modules} & heavy)) + '\\n'))\n"
        "sys.argv = ['mesh']\n"
        "from drasill_cli.cli.app import main\n"
        "main()\n"
    )
    import json

    for line, cword in (("mesh send ", "2"), ("mesh claim ", "2"), ("mesh unlock ", "2")):
        done = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(sorted(HEAVY))],
            env={
                **cli.env,
                "_MESH_COMPLETE": "complete_bash",
                "COMP_WORDS": line,
                "COMP_CWORD": cword,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        loaded = next(x for x in done.stderr.splitlines() if x.startswith("LOADED "))
        assert loaded == "LOADED []", (line, loaded)


@pytest.mark.parametrize("shell", SHELLS)
def test_install_completion_installs_for_the_named_shell(cli: MeshRunner, shell: str) -> None:
    home = Path(cli.env["HOME"])
    done = cli.run("--install-completion", shell, env={"SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{shell} completion installed in ")
    installed = Path(done.stdout.split(" installed in ", 1)[1].strip())
    assert installed.is_file()
    assert f"complete_{shell}" in installed.read_text()
    assert str(installed).startswith(str(home))
    if shell == "zsh":
        assert "compinit" in (home / ".zshrc").read_text()
    if shell == "bash":
        assert str(installed) in (home / ".bashrc").read_text()


def test_install_completion_refuses_an_unknown_shell(cli: MeshRunner) -> None:
    done = cli.run("--install-completion", "tcsh")
    assert done.returncode == 2
    assert "unsupported shell 'tcsh'" in done.stderr and "bash, zsh, fish" in done.stderr
    done = cli.run("--install-completion", env={"SHELL": "/bin/tcsh"})
    assert done.returncode == 2
    assert "could not tell the shell" in done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_show_completion_prints_the_shipped_file(cli: MeshRunner, shell: str) -> None:
    done = cli.run("--show-completion", shell)
    root = Path(__file__).resolve().parent.parent
    assert done.stdout == (root / "completions" / f"mesh.{shell}").read_text()


@pytest.mark.parametrize("shell", ("bash", "zsh"))
def test_a_lock_in_a_repository_is_offered_by_key_and_by_path(
    cli: MeshRunner, tmp_path: Path, shell: str
) -> None:
    from tests.test_working_loop import git_repo

    repo = git_repo(tmp_path / "repo")
    cli.json("register", "alice")
    [held] = cli.json("lock", str(repo / "src" / "parser.py"), "--as", "alice")
    # zsh's value list escapes a colon (`git\\:...`), which zsh inserts as a plain colon
    offered = [v.replace("\\\\:", ":") for v in complete(cli, shell, "mesh unlock --as alice ")]
    assert sorted(offered) == sorted([held["path"], str(repo / "src" / "parser.py")])
    for form in offered:
        assert cli.json("unlock", form, "--as", "alice")[0]["path"] == held["path"]
        cli.json("lock", str(repo / "src" / "parser.py"), "--as", "alice")


def test_zsh_install_leaves_global_completion_styles_alone(cli: MeshRunner) -> None:
    home = Path(cli.env["HOME"])
    mine = "# my own set-up\nbindkey -e\n"
    (home / ".zshrc").write_text(mine)
    for _ in range(2):  # installing again adds nothing
        done = cli.run("--install-completion", "zsh")
        assert done.returncode == 0, done.stderr
    zshrc = (home / ".zshrc").read_text()
    assert zshrc.startswith(mine)
    assert "zstyle" not in zshrc  # no `zstyle ':completion:*' menu select` for every command
    assert zshrc.count("compinit") == 2 and zshrc.count("fpath+=") == 1
    assert (home / ".zfunc" / "_mesh").read_text().startswith("#compdef mesh")
