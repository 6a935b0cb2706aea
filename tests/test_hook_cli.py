"""`mesh hook CLI EVENT` through the real `mesh` console script, on both backends: each CLI's
blocking answers (a held file refused, a stop refused with mail) and exit codes, the import set
of a no-op hook, and hook-taken locks released as soon as the task ends (done, fail, release).

The console script is the one installed beside this interpreter (`.venv/bin/mesh`); it must
run `drasill_cli.cli.entry:main` (pyproject's [project.scripts]): after a change there,
reinstall (`pip install -e .`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner
from tests.test_hooks_core import denial, payload, stop_reason

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "mesh"
ENTRY = "drasill_cli.cli.entry:main"
CLIS = ("claude", "codex", "gemini", "copilot")
# A no-op hook loads none of these (psycopg only on a PostgreSQL mesh).
HEAVY = {"typer", "click", "rich", "pydantic", "pydantic_core", "psutil", "watchfiles", "pynvml"}


def test_the_console_script_runs_the_light_entry() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mesh"] == ENTRY
    module = ENTRY.split(":", maxsplit=1)[0]
    assert module in SCRIPT.read_text(), (
        f"{SCRIPT} predates [project.scripts]: reinstall with `pip install -e .`"
    )


def mesh_hook(
    cli: MeshRunner, cli_name: str, event: str, stdin: str, *pre: str, **env: str
) -> tuple[int, dict[str, Any] | None, str]:
    """`mesh [PRE...] hook CLI EVENT` through the console script: (exit, stdout JSON, stderr)."""
    done = subprocess.run(
        [str(SCRIPT), *pre, "hook", cli_name, event],
        input=stdin,
        env={**cli.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (json.loads(done.stdout) if done.stdout else None), done.stderr


@pytest.fixture
def work(tmp_path: Path) -> Path:
    place = tmp_path / "work"
    (place / "src").mkdir(parents=True)
    (place / "src" / "app.py").write_text("print('hi')\n")
    return place


HELD = {"claude": "src/app.py", "codex": "src/old.py", "gemini": "src/app.py",
        "copilot": "src/app.py"}  # fmt: skip


@pytest.mark.parametrize("cli_name", CLIS)
def test_mesh_hook_refuses_a_held_file_and_a_stop_with_mail_in_each_protocol(
    cli: MeshRunner, work: Path, cli_name: str
) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    cli.json("lock", str(work / HELD[cli_name]), "--as", "bob")
    code, answer, err = mesh_hook(
        cli, cli_name, "pre-tool", payload(cli_name, "pre-tool", work), DRASILL_AGENT="alice"
    )
    assert (code, err) == (0, "")
    assert "bob holds a write lock" in denial(cli_name, answer)
    cli.json("send", "alice", "review my change", "--as", "bob")
    code, answer, err = mesh_hook(
        cli, cli_name, "stop", payload(cli_name, "stop", work), DRASILL_AGENT="alice"
    )
    assert (code, err) == (0, "")
    assert "review my change" in stop_reason(cli_name, answer)
    assert cli.run("inbox", "--as", "alice", "--json").returncode == 1  # consumed once


def test_mesh_hook_takes_the_location_from_the_global_options(cli: MeshRunner, work: Path) -> None:
    """`mesh --mesh-dir DIR hook ...` / `mesh --mesh-url URL hook ...`: the fast path honours
    them as every command does; the environment names no mesh at all."""
    cli.json("register", "alice")
    cli.json("register", "bob")
    cli.json("lock", str(work / "src" / "app.py"), "--as", "bob")
    env = {k: v for k, v in cli.env.items() if k not in ("DRASILL_MESH_DIR", "DRASILL_MESH_URL")}
    option = (
        ("--mesh-url", cli.env["DRASILL_MESH_URL"])
        if cli.kind == "postgres"
        else ("--mesh-dir", cli.env["DRASILL_MESH_DIR"])
    )
    done = subprocess.run(
        [str(SCRIPT), *option, "hook", "claude", "pre-tool"],
        input=payload("claude", "pre-tool", work),
        env={**env, "DRASILL_AGENT": "alice"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bob holds a write lock" in denial("claude", json.loads(done.stdout))


def test_mesh_hook_help_documents_the_hidden_command(cli: MeshRunner) -> None:
    done = subprocess.run(
        [str(SCRIPT), "hook", "--help"], env=cli.env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "payload on stdin" in done.stdout
    listed = subprocess.run(
        [str(SCRIPT), "--help"], env=cli.env, capture_output=True, text=True, check=False
    )
    assert " hooks " in listed.stdout and " hook " not in listed.stdout


@pytest.mark.parametrize("agent", ["alice", None])
def test_a_no_op_hook_imports_no_command_layer_nor_heavy_module(
    cli: MeshRunner, work: Path, agent: str | None
) -> None:
    """An agent on the mesh, no mail, after a tool call (or a session not on the mesh: no
    identity, the registered agents searched for an ancestor): the console script answers
    without Typer, rich, pydantic, psutil, and without psycopg on a directory mesh."""
    cli.json("register", "alice")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), "hook", "claude", "post-tool"],
        input=payload("claude", "post-tool", work),
        env={**cli.env, **({"DRASILL_AGENT": agent} if agent else {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "")
    loaded = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "drasill_cli" in loaded  # the probe sees the imports
    heavy = HEAVY | ({"psycopg"} if cli.kind == "directory" else set())
    assert sorted(loaded & heavy) == []


@pytest.mark.parametrize("verb", ["done", "fail", "release"])
def test_hook_locks_are_released_when_the_task_ends(cli: MeshRunner, work: Path, verb: str) -> None:
    """The contract: locks a hook took are released when the agent's claimed task ends (done,
    fail, release), at once, not at the agent's next hook call."""
    cli.json("register", "alice")
    task = cli.json("task", "add", "edit the app")
    cli.json("claim", task["id"], "--as", "alice")
    cli.json("lock", str(work / "notes.txt"), "--as", "alice")  # the agent's own: kept
    code, answer, _ = mesh_hook(
        cli, "claude", "pre-tool", payload("claude", "pre-tool", work), DRASILL_AGENT="alice"
    )
    assert (code, answer) == (0, None)
    assert len(cli.json("locks")) == 2
    cli.json("task", verb, task["id"], "--as", "alice")
    [kept] = cli.json("locks")
    assert kept["path"].endswith("notes.txt")
    assert any(e["event"] == "unlock" and e.get("by") == "hook" for e in cli.events())
