"""Onboarding: the short block an agent needs in its system prompt, and `mesh launch`.

The prompt stays under 250 words: protocol-server peers cost agents about 25k tokens of tool
definitions, and a shell-out CLI explained in a paragraph is the point of this design. It
teaches the whole loop (`mesh next --wait 600`: mail, review, claim; review; locks and their
lease) and answers what agents working from it alone had to guess: that they are registered
already, that `task start` is optional, where `--json` goes, that waiting keeps their locks,
and what the hooks do when installed.

`launch` starts the tool detached, in a new process session, so the agent outlives the shell
that launched it: under tmux (`new-session -d`) or under heimdall (`hm run`), with the prompt
given to the tool and `DRASILL_AGENT` / `DRASILL_MESH_DIR` set, and then registers it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from drasill_cli import liveness
from drasill_cli.errors import InvalidInput, MeshUnusable, NegativeOutcome
from drasill_cli.models import SUPERVISORS
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
# How long a tmux call may take before tmux counts as hung.
TMUX_TIMEOUT_S = 10.0

_PROMPT = """\
You are {who} on a mesh of AI agents; `mesh` is its CLI. {identity} You are registered \
already (by `mesh launch` or the hooks). --json goes after the command \
(`mesh next --json`). Exit 1 is an ordinary "no" (nothing to do, lock held); \
2 bad input; 3 not found.
- The loop: `mesh next --wait 600` gives your next thing: a message (urgent first), else a \
review waiting on you, else it claims a ready task. Act on it, run it again. Waiting \
keeps you alive and your locks held.
- Tasks: `mesh task done ID --result "what changed, how tested"` (or `fail`; `release` gives \
it back); `mesh task start ID` is optional. Add: `mesh task add TITLE --depends ID --review`.
- Review: `mesh task approve ID --note "..."` or `mesh task reject \
ID --note "what to fix"`; rejected work returns to its author with the note by mail.
- Mail: `mesh send NAME "text"` (`all`: everyone); `mesh inbox` reads mail only.
- Locks: `mesh lock PATH...` before editing shared files, new ones too; relative paths are \
fine. A lock lasts a lease (default 600s, `--ttl SECONDS`) after your last mesh command: in \
long work without a wait, run `mesh heartbeat`. `mesh unlock PATH...` after.
- Hooks, when installed, put your mail into your context and lock each file you edit \
(refusing a file another agent holds).
Check your mail before stopping."""


def prompt(name: str | None = None) -> str:
    """The onboarding block for an agent's system prompt (under 250 words)."""
    if name is None:
        return _PROMPT.format(
            who="an agent",
            identity="Your name is in $DRASILL_AGENT; if unset, pass --as NAME (the name "
            "you were given).",
        )
    check_agent_name(name)
    return _PROMPT.format(
        who=f"agent {name}",
        identity=f"Your name is {name} (set in $DRASILL_AGENT; otherwise pass --as {name}).",
    )


def default_supervisor() -> str:
    """heimdall when `hm` is installed, else tmux."""
    return "heimdall" if shutil.which("hm") else "tmux"


def launch(
    mesh: Mesh,
    name: str,
    *,
    tool: str = "claude",
    supervisor: str | None = None,
    tool_args: Sequence[str] = (),
    cwd: str | None = None,
    role: str | None = None,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    before_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start `tool` as agent `name` in a detached supervised session and register it (with
    `role` and the `ram_gb`/`vram_gb` budget, as `agents.register` takes them).

    `before_start` runs once the request is checked, before the tool starts (`mesh launch
    --hooks` installs the tool's hooks there, so the tool reads them when it starts)."""
    from drasill_cli import agents

    check_agent_name(name)
    supervisor = supervisor or default_supervisor()
    if supervisor not in SUPERVISORS:
        raise InvalidInput(
            f"--backend must be heimdall or tmux, got {supervisor!r}", code="invalid-backend"
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
    env = {"DRASILL_AGENT": name, **mesh.backend.child_env()}
    session = f"mesh-{name}"
    if before_start is not None:
        before_start()
    if supervisor == "tmux":
        pid = _start_tmux(session, argv, env, cwd)
    else:
        pid = _start_heimdall(mesh, session, argv, env, cwd)
    try:
        agent = agents.register(
            mesh,
            name,
            session=session,
            supervisor=supervisor,
            pid=pid,
            tool=tool,
            cwd=cwd,
            role=role,
            ram_gb=ram_gb,
            vram_gb=vram_gb,
        )
    except Exception:
        _stop(supervisor, session)
        raise
    mesh.append_audit_event("launch", name, tool=tool, backend=supervisor, session=session, pid=pid)
    return {**agent, "prompt_passed": bool(prompt_args)}


def _start_tmux(session: str, argv: list[str], env: dict[str, str], cwd: str) -> int:
    """A detached tmux session running `argv`; returns its pane's pid.

    The environment goes through a 0600 file that the pane reads and removes (`childenv`),
    never tmux's command line (`-e KEY=VALUE` would show a mesh URL's password to `ps`)."""
    from drasill_cli import childenv

    env_file = childenv.write(env)
    started = False
    try:
        pid = _new_session(session, childenv.argv(env_file, argv), cwd)
        started = True
        return pid
    finally:
        if not started:
            with contextlib.suppress(OSError):
                os.unlink(env_file)


def _new_session(session: str, command: list[str], cwd: str) -> int:
    """`tmux new-session -d` running `command`; the pane's pid."""
    new_session = ["new-session", "-d", "-P", "-F", "#{pane_pid}", "-s", session, "-c", cwd]
    try:
        done = liveness.tmux_run(
            [*new_session, "--", *command], timeout=TMUX_TIMEOUT_S, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            liveness.tmux_run(["kill-session", "-t", f"={session}"], timeout=TMUX_TIMEOUT_S)
        raise MeshUnusable(
            f"tmux did not answer within {TMUX_TIMEOUT_S:g}s while starting session {session}; "
            "check that `tmux ls` answers (restart a hung server with `tmux kill-server`), "
            "then launch again",
            code="tmux-hung",
        ) from None
    except OSError as exc:
        raise MeshUnusable(
            f"tmux could not be run: {exc.strerror}; check the tmux on PATH with `mesh doctor`",
            code="tmux-failed",
        ) from None
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


def _stop(supervisor: str, session: str) -> None:
    """Undo a launch whose registration was refused."""
    if supervisor == "tmux":
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            liveness.tmux_run(["kill-session", "-t", f"={session}"], timeout=TMUX_TIMEOUT_S)
    else:
        hm = shutil.which("hm")
        if hm is not None:
            subprocess.run([hm, "kill", session], capture_output=True, timeout=10, check=False)
