"""The entry point of `mesh hook CLI EVENT`: read the payload, decide, answer; never raise.

`main` is what the `mesh hook` command (and the fast path in `drasill_cli/__main__.py`) calls.
It imports nothing heavy before it knows it has work: no typer, rich, pydantic or psutil, and a
database driver only when the mesh is a database. Its rules (contract, "Agents held by the
mesh"):

- no identity (`$DRASILL_AGENT` unset and no registered ancestor), or an agent not on the mesh:
  exit 0 and nothing else, so a session that is not on the mesh is never blocked;
- the mesh unreachable, or anything failing inside the hook: the action goes ahead, and a
  `systemMessage` (shown to the user) plus one line on stderr say what failed; never a
  traceback, and a refusal is only ever a decision, never the side effect of an error;
- the exit status is 0 in every case: each CLI reads a refusal from the JSON on stdout
  (Gemini would read a bare non-zero exit as a deny, Copilot an error as a deny).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from drasill_cli.hooks import events
from drasill_cli.hooks.events import Answer, Event

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

MAX_PAYLOAD = 4 * 1024 * 1024  # Claude writes strings over 10,000 chars to files: this is ample


def _say(stdout: IO[str], stderr: IO[str], event: Event | None, answer: Answer) -> int:
    from drasill_cli.hooks import protocols

    if event is None:  # no protocol to speak: stderr only
        if answer.notice:
            stderr.write(answer.notice + "\n")
        return 0
    code, out, err = protocols.render(event, answer)
    if out:
        stdout.write(out)
    if err:
        stderr.write(err)
    return code


def _payload(stdin: IO[str]) -> dict[str, Any]:
    text = stdin.read(MAX_PAYLOAD + 1)
    if len(text) > MAX_PAYLOAD or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _identity(mesh: Mesh, event: Event, environ: Mapping[str, str]) -> str | None:
    """`$DRASILL_AGENT`, else the agent registered on this host whose pid is an ancestor."""
    from drasill_cli.hooks import identity

    named = identity.agent_from_env(environ)
    if named is not None:
        return named
    chain = identity.ancestors()
    if not chain:
        return None
    # The records straight from the store (not `presence.records`: that module loads
    # liveness, hence subprocess and shutil, which a session not on the mesh never needs).
    table = mesh.backend.presence
    found = (
        identity.Registered(agent.name, agent.pid, agent.pid_started, agent.host)
        for agent in (table.get(name) for name in table.names())
        if agent is not None
    )
    return identity.agent_among(chain, found, identity.this_host())


def _cli_pid(event: Event) -> int | None:
    from drasill_cli.hooks import identity

    proc = identity.cli_process(identity.ancestors(), event.cli_pid)
    return proc.pid if proc is not None else event.cli_pid


def main(
    cli: str,
    event: str,
    stdin: IO[str],
    stdout: IO[str],
    stderr: IO[str],
    environ: Mapping[str, str],
    *,
    mesh: Mesh | None = None,
    mesh_dir: str | None = None,
    mesh_url: str | None = None,
) -> int:
    """Answer one hook call of `cli` for the mesh's `event` (see `events.EVENTS`); returns the
    exit status. `mesh`: an opened mesh to use (tests); else the one `mesh_dir`/`mesh_url`
    (`mesh --mesh-dir DIR hook ...`) or the configuration names is opened."""
    from drasill_cli.hooks import protocols

    if cli not in protocols.CLIS or event not in events.EVENTS:
        return _say(
            stdout,
            stderr,
            None,
            Answer(
                notice=f"mesh hook: unknown CLI or event {cli!r} {event!r}; CLI is one of "
                f"{', '.join(protocols.CLIS)}, EVENT one of {', '.join(events.EVENTS)} "
                "(reinstall with `mesh hooks install CLI`)"
            ),
        )
    parsed = protocols.parse(cli, event, _payload(stdin), environ)
    try:
        answer = _decide(parsed, environ, mesh, (mesh_dir, mesh_url))
    except Exception as exc:  # noqa: BLE001 -- a hook never crashes its CLI; it says why
        answer = Answer(notice=_failed(exc))
    return _say(stdout, stderr, parsed, answer)


def _failed(exc: BaseException) -> str:
    from drasill_cli.errors import MeshError, MeshUnusable

    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    if isinstance(exc, MeshUnusable):
        return f"mesh unreachable, hook skipped (the action goes ahead): {text}"
    if isinstance(exc, MeshError):
        return f"mesh hook skipped (the action goes ahead): {text}"
    return f"mesh hook failed (the action goes ahead): {type(exc).__name__}: {text}"


def _decide(
    event: Event,
    environ: Mapping[str, str],
    mesh: Mesh | None,
    location: tuple[str | None, str | None] = (None, None),
) -> Answer:
    if mesh is None:
        from drasill_cli.mesh import Mesh

        opened = Mesh.open(location[0], mesh_url=location[1])
        try:
            return _decide_on(opened, event, environ)
        finally:
            close = getattr(opened.backend, "close", None)
            if close is not None:
                close()
    return _decide_on(mesh, event, environ)


def _decide_on(mesh: Mesh, event: Event, environ: Mapping[str, str]) -> Answer:
    from drasill_cli.hooks import decide

    agent = _identity(mesh, event, environ)
    if agent is None:
        return Answer()
    if event.kind == events.SESSION_START:
        return decide.session_start(mesh, agent, event, _cli_pid(event))
    if not decide.beat(mesh, agent):  # not on the mesh: nothing at all
        return Answer()
    decide.release_for_ended_tasks(mesh, agent)
    return decide.HANDLERS[event.kind](mesh, agent, event)
