"""Onboarding: the short block an agent needs in its system prompt, and `mesh launch`.

The prompt stays under 300 tokens: protocol-server peers cost agents about 25k tokens of tool
definitions, and a shell-out CLI explained in a paragraph is the point of this design.

`launch` starts the tool detached, in a new process session, so the agent outlives the shell
that launched it: under tmux (`new-session -d`) or under heimdall (`hm run`), with the prompt
given to the tool and `DRASILL_AGENT` / `DRASILL_MESH_DIR` set, and then registers it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.errors import InvalidInput, NegativeOutcome
from drasill_cli.names import check_agent_name

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

# How each tool takes extra system-prompt text in an interactive session.
SYSTEM_PROMPT_ARGS: dict[str, tuple[str, ...]] = {"claude": ("--append-system-prompt",)}
HEIMDALL_GET = "cargo install --git https://github.com/nazq/heimdall"
HEIMDALL_INSTALL = (
    f"heimdall (hm) is not on PATH; install it with `{HEIMDALL_GET}`, or use --backend tmux"
)
SOCKET_WAIT_S = 5.0

_PROMPT = """\
You are {who} on a mesh of AI agents sharing this machine. `mesh` is its CLI; add --json \
for JSON. {identity}
- Mail: `mesh inbox` takes your next message (urgent first) and marks it read; `--list` shows \
all unread. A line "[mesh] N new messages ... run mesh inbox" typed into your session means mail \
is waiting: read it.
- Send: `mesh send NAME "text"` (NAME `all` for everyone; `--priority urgent`, `--reply-to ID`).
- Who is here: `mesh agents`.
- Tasks: `mesh claim --next` takes one (exit 1: none free), then `mesh task start ID` and \
`mesh task done ID --result "..."` (or `fail` / `release`). Add work: `mesh task add TITLE`.
- Before editing shared files: `mesh lock PATH...`; exit 1 names the holder, so wait or ask \
them. `mesh unlock PATH...` when done.
- Exit codes: 0 done, 1 no or denied, 2 bad input, 3 not found.
Check your inbox after each task and before you stop."""


def prompt(name: str | None = None) -> str:
    """The onboarding block for an agent's system prompt (under 1,200 characters)."""
    if name is None:
        return _PROMPT.format(
            who="an agent",
            identity="Your agent name is in $DRASILL_AGENT; if it is unset, pass --as NAME "
            "with the name you were given.",
        )
    check_agent_name(name)
    return _PROMPT.format(
        who=f"agent {name}",
        identity=f"Your name is {name} (set in $DRASILL_AGENT; otherwise pass --as {name}).",
    )


def default_backend() -> str:
    """heimdall when `hm` is installed, else tmux."""
    return "heimdall" if shutil.which("hm") else "tmux"


def launch(
    mesh: Mesh,
    name: str,
    *,
    tool: str = "claude",
    backend: str | None = None,
    tool_args: Sequence[str] = (),
    cwd: str | None = None,
) -> dict[str, Any]:
    """Start `tool` as agent `name` in a detached supervised session and register it."""
    from drasill_cli import agents

    check_agent_name(name)
    backend = backend or default_backend()
    if backend not in agents.BACKENDS:
        raise InvalidInput(
            f"--backend must be heimdall or tmux, got {backend!r}", code="invalid-backend"
        )
    executable = shutil.which(tool)
    if executable is None:
        raise InvalidInput(
            f"{tool!r} is not on PATH; install it or choose another --tool",
            code="tool-not-found",
        )
    text = prompt(name)
    prompt_args = SYSTEM_PROMPT_ARGS.get(os.path.basename(tool))
    argv = [executable, *(prompt_args or ()), *([text] if prompt_args else ()), *tool_args]
    cwd = cwd or os.getcwd()
    env = {"DRASILL_AGENT": name, "DRASILL_MESH_DIR": str(mesh.root)}
    session = f"mesh-{name}"
    if backend == "tmux":
        pid = _start_tmux(session, argv, env, cwd)
    else:
        pid = _start_heimdall(mesh, session, argv, env, cwd)
    try:
        agent = agents.register(
            mesh, name, session=session, backend=backend, pid=pid, tool=tool, cwd=cwd
        )
    except Exception:
        _stop(backend, session)
        raise
    mesh.record("launch", name, tool=tool, backend=backend, session=session, pid=pid)
    return {**agent, "prompt_passed": bool(prompt_args)}


def _start_tmux(session: str, argv: list[str], env: dict[str, str], cwd: str) -> int:
    """A detached tmux session running `argv`; returns its pane's pid."""
    settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    new_session = ["new-session", "-d", "-P", "-F", "#{pane_pid}", "-s", session, "-c", cwd]
    done = liveness.tmux_run(
        [*new_session, *settings, "--", *argv], timeout=10, start_new_session=True
    )
    if done is None:
        raise InvalidInput(
            "tmux is not on PATH; install it (e.g. apt install tmux) or use --backend heimdall",
            code="tmux-not-found",
        )
    if done.returncode != 0:
        raise NegativeOutcome(
            f"tmux could not start session {session}: {done.stderr.strip()}; if it already "
            f"exists, attach with `tmux attach -t {session}` or end it with "
            f"`tmux kill-session -t {session}`",
            code="launch-failed",
        )
    return int(done.stdout.strip())


def _start_heimdall(
    mesh: Mesh, session: str, argv: list[str], env: dict[str, str], cwd: str
) -> int:
    """`hm run` in its own process session; returns the supervisor's pid once its socket is up."""
    hm = shutil.which("hm")
    if hm is None:
        raise InvalidInput(HEIMDALL_INSTALL, code="heimdall-not-found")
    socket_dir = mesh.config.heimdall_socket_dir()
    socket_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [hm, "run", "--id", session, "--socket-dir", str(socket_dir), "--", *argv],
        cwd=cwd,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sock = liveness.heimdall_files(socket_dir, session).sock
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise NegativeOutcome(
                f"hm run did not start session {session} (exit {process.poll()}); try "
                f"`hm run --id {session} -- {argv[0]}` by hand to see why",
                code="launch-failed",
            )
        time.sleep(0.05)
    return process.pid


def _stop(backend: str, session: str) -> None:
    """Undo a launch whose registration was refused."""
    if backend == "tmux":
        liveness.tmux_run(["kill-session", "-t", f"={session}"], timeout=10)
    else:
        hm = shutil.which("hm")
        if hm is not None:
            subprocess.run([hm, "kill", session], capture_output=True, timeout=10, check=False)
