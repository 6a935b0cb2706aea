"""Run the shell commands of a Markdown page as typed: the machinery behind tests/test_tutorial.py
and tests/test_doc_commands.py.

What is run: every fenced block whose language is `sh`, `bash` or `console`. In a `sh`/`bash`
block every line is a command (a line ending in a backslash goes on with the next), except blank
lines and comment lines; in a `console` block only the lines that start with `$ ` (the prompt is
cut off). `# terminal N` switches to terminal N (a persistent bash process of its own, as the
page asks the reader to open); lines before any such comment are terminal 0, which runs in
terminal 1 (docs/tutorial.md also types its `export` lines there in both). A command whose
comment says `exit N` must exit N, every other command 0.

Markers, HTML comments a rendered page does not show, say what a page needs here:
- `<!-- doc-test: skip REASON -->` on the line before a block: the block is not run. The reason
  is required (what the block needs that a throwaway mesh has not: a second host, root,
  systemd, a real agent CLI, the network, a command that runs until it is stopped).
- `<!-- doc-test: setup COMMAND -->`: run in terminal 1 before the page's first block, for what
  the page assumes the reader already has (a Makefile, a git work tree, a config file).
- `<!-- doc-test: path /ABSOLUTE/PATH -->`: that path becomes a fresh folder of the test's own,
  in every command (the page's throwaway mesh, a shared folder only root could make).
Each page runs with a throwaway HOME (so `~`, XDG folders and the default mesh are the test's);
a `postgresql://` URL in a command becomes a fresh schema's URL, which the shells also have in
`$DOC_TEST_PG_URL` (for a setup marker that writes a config file).

How: each terminal is a persistent bash process; a plain `mesh ARGS` line (no shell syntax)
runs in the test process (tests/inprocess.py) with that shell's exported environment and
working directory, every other line in the shell itself (so `$(...)`, pipes, `&&`, variables
and `cd` behave as typed).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = ("sh", "bash", "console")
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^[ \t]*```", re.M | re.S
)
MARKER = re.compile(r"<!--\s*doc-test:\s*(?P<kind>\w+)(?P<rest>.*?)-->", re.S)
EXPECTED = re.compile(r"\bexit (\d+)\b")
URL = re.compile(r"postgresql://[^\s\"']+")
RC_MARK = "__DOC_TEST_RC__"
SHELL_SYNTAX = re.compile(r"[|&;<>$`()*?~{}\[\]!=\\]")
# Commands that stay a real process: they start processes, servers or long waits of their own,
# or write to the process's own stdout (`lock -- CMD`); see tests/inprocess.py.
AS_PROCESS = ("bridge", "watch", "dashboard", "launch", "demo", "--install-completion")
LINE_TIMEOUT = 60.0  # seconds one typed line may take: a command that waits for ever fails


@dataclass(frozen=True)
class Command:
    """One line to type: in which terminal, and the exit status the page implies."""

    terminal: int
    line: str
    expected: int


@dataclass(frozen=True)
class Block:
    """A fenced shell block of a page: its commands, or the reason it is not run."""

    line: int  # where the fence opens (1-based), for messages
    commands: tuple[Command, ...]
    skip: str | None = None


@dataclass
class Page:
    """What a page asks to run."""

    path: Path
    blocks: list[Block] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[Command]:
        return [c for block in self.blocks if block.skip is None for c in block.commands]


def _lines(body: str, lang: str, indent: str) -> list[str]:
    """The typed lines of a block body: dedented, continuations joined, prompts cut off."""
    out: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = raw[len(indent) :] if raw.startswith(indent) else raw.lstrip()
        if lang == "console" and not pending:
            if line.startswith("$ "):
                line = line[2:]
            elif not line.strip().startswith("# terminal"):
                continue  # output shown on the page
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line if pending else line)
        pending = ""
    return out


def _commands(lines: list[str], terminal: int) -> tuple[list[Command], int]:
    found = []
    for raw in lines:
        line = raw.strip()
        switch = re.fullmatch(r"# terminal (\d+)\b.*", line)
        if switch:
            terminal = int(switch.group(1))
            continue
        if not line or line.startswith("#"):
            continue
        comment = line.split(" #", 1)[1] if " #" in line else ""
        expected = EXPECTED.search(comment)
        found.append(Command(terminal, line, int(expected.group(1)) if expected else 0))
    return found, terminal


def _skip_reason(before: str) -> str | None:
    """The reason of a skip marker among the marker lines right above a fence, if any."""
    for line in reversed(before.rstrip().splitlines()):
        marker = MARKER.fullmatch(line.strip())
        if marker is None:
            return None
        if marker.group("kind") == "skip":
            return " ".join(marker.group("rest").split())
    return None


def parse(path: Path) -> Page:
    """The blocks, setup lines and throwaway paths of the Markdown page at `path`."""
    text = path.read_text()
    page = Page(path)
    for marker in MARKER.finditer(text):
        rest = " ".join(marker.group("rest").split())
        if marker.group("kind") == "setup":
            page.setup.append(rest)
        elif marker.group("kind") == "path":
            page.paths.append(rest)
        elif marker.group("kind") != "skip":
            raise AssertionError(f"{path.name}: unknown doc-test marker {marker.group(0)!r}")
    terminal = 0  # no `# terminal N` yet: the first terminal
    for fence in FENCE.finditer(text):
        if fence.group("lang") not in LANGUAGES:
            continue
        opened = text.count("\n", 0, fence.start()) + 1
        reason = _skip_reason(text[: fence.start()])
        if reason is not None:
            page.blocks.append(Block(opened, (), skip=reason))
            continue
        lines = _lines(fence.group("body"), fence.group("lang"), fence.group("indent"))
        commands, terminal = _commands(lines, terminal)
        page.blocks.append(Block(opened, tuple(commands)))
    return page


def in_process_args(line: str) -> list[str] | None:
    """The arguments of a plain `mesh ARGS` line that can run in this process, else None."""
    command = line.split(" #", 1)[0].strip()
    if not command.startswith("mesh ") or SHELL_SYNTAX.search(command):
        return None
    args = shlex.split(command)[1:]
    if "--" in args or any(word in args for word in AS_PROCESS):
        return None
    return args


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
            start_new_session=True,  # a line that hangs is ended with all it started
        )

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def run(self, line: str) -> tuple[int, str]:
        """Type `line`; its exit status and what it printed (stdout and stderr)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # The shell's own stdin is this script: the line reads an empty stdin instead.
        self.proc.stdin.write(f"{{ {line}\n}} </dev/null\necho {RC_MARK}$?\n")
        self.proc.stdin.flush()
        output: list[str] = []
        watchdog = threading.Timer(LINE_TIMEOUT, self._kill)
        watchdog.start()
        try:
            for out in self.proc.stdout:
                if out.startswith(RC_MARK):
                    return int(out[len(RC_MARK) :]), "".join(output)
                output.append(out)
        finally:
            watchdog.cancel()
        raise AssertionError(
            f"the shell ended (or the line ran past {LINE_TIMEOUT:.0f} s) while running "
            f"{line!r}: {''.join(output)}"
        )

    def state(self) -> tuple[dict[str, str], str]:
        """The shell's exported environment and working directory, as a command would get."""
        code, out = self.run("env -0 | base64 -w0; echo; pwd")
        assert code == 0, out
        encoded, cwd = out.splitlines()[:2]
        pairs = base64.b64decode(encoded).decode().split("\0")
        env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        return env, cwd

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        finally:
            self._kill()  # anything a line left running in the background


class Terminals:
    """The terminals a page opens, each a persistent bash in `cwd` with `env`; each typed line
    has `replace` applied first."""

    def __init__(
        self, env: dict[str, str], cwd: Path, replace: dict[str, str], url: str | None = None
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.replace = replace
        self.url = url
        self.shells: dict[int, Shell] = {}

    def typed(self, line: str) -> str:
        """`line` as the test types it: the page's paths and URLs made the test's own."""
        for old, new in self.replace.items():
            line = line.replace(old, new)
        url = self.url
        return line if url is None else URL.sub(lambda _: url, line)

    def run(self, terminal: int, line: str) -> tuple[int, str]:
        """Type `line` in `terminal` (0: the first); its exit status and output. A plain
        `mesh ARGS` line (no shell syntax but a trailing comment) runs in this process
        (tests/inprocess.py), with the shell's environment and working directory: what a
        `mesh` process started by that shell would get, without its start-up cost."""
        terminal = terminal or 1
        if terminal not in self.shells:
            self.shells[terminal] = Shell(self.env, self.cwd)
        shell = self.shells[terminal]
        typed = self.typed(line)
        args = in_process_args(typed)
        if args is None:
            return shell.run(typed)
        from tests.inprocess import run_mesh

        env, cwd = shell.state()
        done = run_mesh(args, input=None, env=env, cwd=cwd)
        return done.returncode, done.stdout + done.stderr

    def close(self) -> None:
        for shell in self.shells.values():
            shell.close()
