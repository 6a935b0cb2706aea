"""AI coding CLIs: how to run each one non-interactively, and which are installed.

A profile is the argv that runs a tool once on a prompt and exits, with `{prompt}` where the
prompt goes. The built-in profiles follow each tool's own documentation for scripted use;
`[tools.NAME] command = [...]` in the config file adds a tool or overrides a built-in one.
The prompt is always passed as one argv element, never through a shell, so no quoting of task
text can break out of it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from typing import Any

from drasill_cli.config import Config
from drasill_cli.errors import InvalidInput

PLACEHOLDER = "{prompt}"
VERSION_TIMEOUT_S = 5.0

# name -> (argv with {prompt}, what the documentation calls the mode)
BUILTIN: dict[str, tuple[list[str], str]] = {
    "claude": (["claude", "-p", PLACEHOLDER], "print mode (-p): answer, then exit"),
    "codex": (["codex", "exec", PLACEHOLDER], "codex exec: non-interactive run"),
    "gemini": (["gemini", "-p", PLACEHOLDER], "prompt mode (-p): answer, then exit"),
    "aider": (
        ["aider", "--message", PLACEHOLDER, "--yes"],
        "--message: one instruction, then exit; --yes: confirm every prompt",
    ),
    "opencode": (["opencode", "run", PLACEHOLDER], "opencode run: non-interactive run"),
    "goose": (["goose", "run", "-t", PLACEHOLDER], "goose run -t: headless task"),
    "cursor-agent": (["cursor-agent", "-p", PLACEHOLDER], "print mode (-p): headless run"),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """How to run one tool: its argv template and how to ask its version."""

    name: str
    command: tuple[str, ...]
    version_command: tuple[str, ...]
    source: str  # "builtin" or "config"
    note: str = ""

    @property
    def executable(self) -> str:
        """The program looked up on PATH."""
        return self.command[0]

    def argv(self, prompt: str) -> list[str]:
        """The command line that runs the tool on `prompt`."""
        return [part.replace(PLACEHOLDER, prompt) for part in self.command]


def _invalid(name: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"config [tools.{name}] {why}; write e.g. "
        f'[tools.{name}] command = ["{name}", "--prompt", "{PLACEHOLDER}"]',
        code="invalid-tool-profile",
    )


def _strings(name: str, key: str, value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(part, str) and part for part in value)
    ):
        raise _invalid(name, f"{key} must be a non-empty list of non-empty strings")
    return tuple(value)


def _from_config(name: str, table: dict[str, Any]) -> Profile:
    unknown = sorted(set(table) - {"command", "version"})
    if unknown:
        raise _invalid(name, f"has unknown key(s) {', '.join(unknown)} (known: command, version)")
    if "command" not in table:
        raise _invalid(name, "needs a command")
    command = _strings(name, "command", table["command"])
    if sum(part.count(PLACEHOLDER) for part in command) != 1:
        raise _invalid(name, f"command must contain {PLACEHOLDER} exactly once")
    version = table.get("version")
    version_command = (
        _strings(name, "version", version) if version is not None else (command[0], "--version")
    )
    return Profile(name, command, version_command, "config")


def profiles(config: Config) -> dict[str, Profile]:
    """Every known tool: the built-ins, then the config file's (which may override them)."""
    found = {
        name: Profile(name, tuple(command), (command[0], "--version"), "builtin", note)
        for name, (command, note) in BUILTIN.items()
    }
    for name, table in config.tools.items():
        found[name] = _from_config(name, table)
    return found


def get(config: Config, name: str) -> Profile:
    """The profile of `name`; an unknown tool is invalid input (exit 2)."""
    known = profiles(config)
    if name not in known:
        raise InvalidInput(
            f"unknown tool {name!r}; known: {', '.join(sorted(known))}; add one in the config "
            f'file as [tools.{name}] command = ["{name}", "{PLACEHOLDER}"]',
            code="unknown-tool",
        )
    return known[name]


def version_of(argv: tuple[str, ...], timeout: float = VERSION_TIMEOUT_S) -> str | None:
    """The first line the tool prints for its version, or None when it cannot say."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()[:120]
    return None


def detect(config: Config) -> list[dict[str, Any]]:
    """Each known tool: whether it is on PATH, where, its version and its invocation."""
    rows = []
    for profile in profiles(config).values():
        path = shutil.which(profile.executable)
        version = None
        if path is not None:
            version = version_of(profile.version_command)
        rows.append(
            {
                "name": profile.name,
                "installed": path is not None,
                "path": path,
                "version": version,
                "command": list(profile.command),
                "source": profile.source,
                "note": profile.note,
            }
        )
    return rows
