"""docs/tutorial.md works typed as written: its commands run, in order, in two real shells.

The page is read and run by tests/doc_commands.py, as the README and the how-tos are
(tests/test_doc_commands.py). The tutorial asks for both terminals to have `DRASILL_MESH_DIR`
set: `export` lines before the first `# terminal N` comment go to both terminals. What cannot
run unattended is left out, and only that:
- the install line (`python3 -m venv ...`) and `export PATH=...`: the package under test is
  already installed and on PATH;
- `mesh status --watch` and `mesh log --follow`: they run until a person stops them.
`/tmp/tutorial-mesh` becomes a fresh temporary directory, and `claude` is a stand-in script on
PATH (the tutorial's last step hands a task to an AI CLI), so the bridge step runs for real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import MeshRunner
from tests.doc_commands import Command, Terminals, parse

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
LONG_RUNNING = ("mesh status --watch", "mesh log --follow")
SKIPPED_PREFIXES = ("python3 -m venv ", "export PATH=")
FAKE_CLAUDE = """#!/bin/sh
echo "stand-in claude ran with: $*"
"""


def tutorial_commands() -> list[Command]:
    """Every runnable line, in order; terminal 0 (before any `# terminal N`) means both for an
    `export` line, else terminal 1."""
    found = []
    for command in parse(TUTORIAL).commands:
        if command.line.startswith(SKIPPED_PREFIXES + LONG_RUNNING):
            continue
        if command.terminal == 0 and not command.line.startswith("export "):
            found.append(Command(1, command.line, command.expected))
        else:
            found.append(command)
    return found


def test_the_tutorial_lists_commands_in_both_terminals() -> None:
    commands = tutorial_commands()
    assert {command.terminal for command in commands} == {0, 1, 2}
    assert any(command.expected == 1 for command in commands)
    assert not any("t-1ht" in command.line for command in commands)  # no id from someone's run
    assert "pip install -q drasill-cli" not in TUTORIAL.read_text()  # not on the index


@pytest.mark.timeout(600)
def test_the_tutorial_runs_as_written(cli: MeshRunner, tmp_path: Path) -> None:
    mesh_dir = tmp_path / "tutorial-mesh"
    work = tmp_path / "work"
    work.mkdir()
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "claude").write_text(FAKE_CLAUDE)
    (tools / "claude").chmod(0o755)
    env = {
        **cli.env,
        "PATH": f"{tools}:{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    env.pop("DRASILL_MESH_DIR", None)
    terminals = Terminals(env, work, {"/tmp/tutorial-mesh": str(mesh_dir)})
    try:
        for command in tutorial_commands():
            for number in (1, 2) if command.terminal == 0 else (command.terminal,):
                code, output = terminals.run(number, command.line)
                assert code == command.expected, (
                    f"terminal {number}: {command.line}\nexit {code}\n{output}"
                )
    finally:
        terminals.close()
    assert not mesh_dir.exists()  # the last step throws the mesh away
