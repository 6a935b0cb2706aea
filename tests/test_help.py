"""Help reads like a manual, and usage errors point at the right help (through the CLI)."""

from __future__ import annotations

import json
import re

import pytest

from drasill_cli.cli import reference
from tests.conftest import MeshRunner

COMMANDS = [path for path in reference.command_paths() if path]
PYTHON_TYPES = re.compile(r"<(str|int|float|bool|list\[[a-z]+\])>|\{[a-z_]+\}")


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_shows_examples_and_human_placeholders(path: list[str]) -> None:
    text = reference.help_text(path)
    assert "Examples:" in text, f"mesh {' '.join(path)} --help has no examples"
    assert "  mesh " in text.split("Examples:", 1)[1] or "mesh " in text.split("Examples:", 1)[1]
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)


def test_placeholders_say_what_to_type(cli: MeshRunner) -> None:
    send = cli.run("send", "--help").stdout
    assert "Usage: mesh send [OPTIONS] NAME [TEXT]" in send
    assert "--as NAME" in send and "--attach PATH" in send and "--reply-to ID" in send
    lock = cli.run("lock", "--help").stdout
    assert "PATH..." in lock and "--mode MODE" in lock and "--ttl SECONDS" in lock
    assert "docs/reference/locks.md" in lock and "intent" in lock and "co_write" in lock
    assert "ID" in cli.run("task", "start", "--help").stdout.splitlines()[0]
    assert "--mesh-dir DIR" in cli.run("--help").stdout


def test_top_level_summaries_are_whole_sentences(cli: MeshRunner) -> None:
    text = cli.run("--help").stdout
    block = text.split("Commands:", 1)[1].split("Examples:", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("  ") and line.strip()]
    assert len(rows) >= 20
    for row in rows:
        summary = row.split(None, 1)[1]
        assert not summary.endswith("..."), row
        assert summary.endswith("."), row


def test_usage_error_points_at_the_subcommand_help(cli: MeshRunner) -> None:
    done = cli.run("send")
    assert done.returncode == 2
    assert "see mesh send --help" in done.stderr
    done = cli.run("task", "add", "x", "--priority")
    assert done.returncode == 2
    assert "see mesh task add --help" in done.stderr
    assert cli.run("frobnicate").stderr.rstrip().endswith("see mesh --help")


def test_a_global_option_after_the_command_says_where_it_goes(cli: MeshRunner) -> None:
    done = cli.run("agents", "--mesh-dir", "/tmp/elsewhere")
    assert done.returncode == 2
    assert "goes before the command" in done.stderr
    assert "mesh --mesh-dir DIR agents" in done.stderr


def test_json_before_the_command_says_where_it_goes(cli: MeshRunner) -> None:
    done = cli.run("--json", "agents")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid-usage"
    assert "--version" not in error["message"]
    assert "mesh agents --json" in error["message"]


def test_a_subcommand_run_builds_only_itself_and_leaves_its_group_whole(cli: MeshRunner) -> None:
    """`mesh task list` has Typer build only `list` of the `task` group (speed), and the group
    is whole again afterwards: its help, a typo and the next in-process run see every command."""
    from drasill_cli.cli.common import app

    cli.json("task", "add", "one")
    listed = cli.run("task", "list", "--mesh-dir", "task")  # a value that names the group
    assert listed.returncode != 0  # global options go before the command (usage error)
    assert cli.run("--mesh-dir", str(cli.mesh_dir), "task", "list").returncode == 0
    group = next(info for info in app.registered_groups if info.name == "task")
    assert group.typer_instance is not None
    names = {info.name for info in group.typer_instance.registered_commands}
    assert {"add", "list", "show", "cancel", "edit", "done", "reject"} <= names
    help_text = cli.run("task", "--help").stdout
    assert all(f"  {name} " in help_text for name in ("add", "list", "cancel", "reject"))
    typo = cli.run("task", "lst")
    assert typo.returncode == 2 and "Did you mean 'list'" in typo.stderr
