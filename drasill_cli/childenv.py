"""Hand a child its environment through a private file, never its command line.

`mesh launch --backend tmux` must give the agent `DRASILL_MESH_URL`, which may carry a
password; `tmux new-session -e KEY=VALUE` would put it on tmux's command line, where every
local user reads it (`ps`). Instead `write` puts the variables in a new 0600 file and the pane
runs `python -P -m drasill_cli.childenv FILE -- TOOL ARGS...`: that reads the file (never
through a link, only a regular file of this user's that no one else may read), removes it, sets
the variables and execs the tool (same pid, the tool's own argv).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile


def write(env: dict[str, str]) -> str:
    """A new 0600 file holding `env` (JSON); its path."""
    fd, path = tempfile.mkstemp(prefix="mesh-launch-", suffix=".env")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(env).encode())
    finally:
        os.close(fd)
    return path


def argv(path: str, command: list[str]) -> list[str]:
    """The command line that runs `command` with the environment in `path`."""
    return [sys.executable, "-P", "-m", "drasill_cli.childenv", path, "--", *command]


def read(path: str) -> dict[str, str]:
    """The environment in `path`, which is then removed; ValueError when it is not a private
    regular file of this user's holding a JSON object of strings."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_mode & 0o077
            or info.st_size > 1 << 20
        ):
            raise ValueError(f"{path} is not a private file of this user's")
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    finally:
        os.close(fd)
    os.unlink(path)
    env = json.loads(data)
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError(f"{path} does not hold an environment")
    return env


def main(args: list[str]) -> int:
    """`childenv FILE -- COMMAND ARGS...`: exec COMMAND with the environment in FILE."""
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write("usage: python -m drasill_cli.childenv FILE -- COMMAND [ARGS...]\n")
        return 2
    try:
        env = read(args[0])
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"mesh launch: cannot read the agent's environment: {exc}\n")
        return 127
    os.environ.update(env)
    try:
        os.execvp(args[2], args[2:])  # noqa: S606 -- the launched tool, by design
    except OSError as exc:
        sys.stderr.write(f"mesh launch: cannot run {args[2]}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
