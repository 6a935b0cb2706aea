"""docs/tutorial.md works typed as written: its commands run, in order, in two real shells.

Each ```sh block is read line by line. `# terminal 1` / `# terminal 2` switch between two
persistent bash processes (one per terminal, as the tutorial asks the reader to open); lines
before any such comment go to terminal 1, except `export` lines, which go to both (the
tutorial asks for both terminals to have `DRASILL_MESH_DIR` set). A line whose comment says
`exit 1` must exit 1, every other line 0. What cannot run unattended is left out, and only that:
- the install line (`python3 -m venv ...`) and `export PATH=...`: the package under test is
  already installed and on PATH;
- `mesh status --watch` and `mesh log --follow`: they run until a person stops them.
`/tmp/tutorial-mesh` becomes a fresh temporary directory, and `claude` is a stand-in script on
PATH (the tutorial's last step hands a task to an AI CLI), so the bridge step runs for real.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MeshRunner

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
LONG_RUNNING = ("mesh status --watch", "mesh log --follow")
SKIPPED_PREFIXES = ("python3 -m venv ", "export PATH=")
MARK = "__TUTORIAL_RC__"
FAKE_CLAUDE = """#!/bin/sh
echo "stand-in claude ran with: $*"
"""


def tutorial_commands() -> list[tuple[int, str, int]]:
    """(terminal, command line, expected exit code) for every runnable line, in order;
    terminal 0 means both."""
    text = TUTORIAL.read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        terminal = 0
        for raw in block.splitlines():
            line = raw.strip()
            switch = re.fullmatch(r"# terminal (\d)\b.*", line)
            if switch:
                terminal = int(switch.group(1))
                continue
            if not line or line.startswith("#"):
                continue
            if line.startswith(SKIPPED_PREFIXES) or line.startswith(LONG_RUNNING):
                continue
            comment = line.split(" #", 1)[1] if " #" in line else ""
            expected = 1 if re.search(r"\bexit 1\b", comment) else 0
            if terminal == 0 and not line.startswith("export "):
                found.append((1, line, expected))
            else:
                found.append((terminal, line, expected))
    return found


class Shell:
    """One terminal: a bash process fed one command at a time."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )

    def run(self, line: str) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{line}\necho {MARK}$?\n")
        self.proc.stdin.flush()
        output: list[str] = []
        for out in self.proc.stdout:
            if out.startswith(MARK):
                return int(out[len(MARK) :]), "".join(output)
            output.append(out)
        raise AssertionError(f"the shell ended while running {line!r}: {''.join(output)}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def test_the_tutorial_lists_commands_in_both_terminals() -> None:
    commands = tutorial_commands()
    assert {terminal for terminal, _, _ in commands} == {0, 1, 2}
    assert any(expected == 1 for _, _, expected in commands)
    assert not any("t-1ht" in line for _, line, _ in commands)  # no id from someone's run
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
    shells = {1: Shell(env, work), 2: Shell(env, work)}
    try:
        for terminal, line, expected in tutorial_commands():
            typed = line.replace("/tmp/tutorial-mesh", str(mesh_dir))
            for number in (1, 2) if terminal == 0 else (terminal,):
                code, output = shells[number].run(typed)
                assert code == expected, f"terminal {number}: {line}\nexit {code}\n{output}"
    finally:
        for shell in shells.values():
            shell.close()
    assert not mesh_dir.exists()  # the last step throws the mesh away
