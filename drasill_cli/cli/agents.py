"""`mesh register`, `unregister`, `heartbeat`, `agents`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from drasill_cli.cli import complete
from drasill_cli.cli.common import AsOpt, JsonOpt, app, command, print_json, say, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.cli.render import ago, table


def show_agent(agent: dict[str, Any], verb: str, json_out: bool) -> None:
    """One agent, as JSON or as a human line."""
    if json_out:
        print_json(agent)
    else:
        where = f" session {agent['session']}" if agent.get("session") else ""
        pid = f" pid {agent['pid']}" if agent.get("pid") else ""
        say(f"{verb} {agent['name']} ({agent['state']}){pid}{where}")


@command(
    app,
    "register",
    short_help="Join the mesh as NAME, or refresh the registration.",
    epilog=examples(
        "mesh register alice --role reviewer --tool claude",
        "mesh register worker-1 --pid $$ --ram-gb 4   # its life is this shell's; reserve 4 GiB",
        "mesh register bob --session main:0.1 --backend tmux   # woken in that tmux pane",
    ),
)
def register_cmd(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(help="Agent name: a-z, 0-9, '_' and '-', up to 64.", metavar="NAME"),
    ],
    session: Annotated[
        str | None,
        typer.Option(help="Supervisor session id (heimdall id or tmux target).", metavar="ID"),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Session backend used to wake it: heimdall or tmux.",
            metavar="BACKEND",
            autocompletion=complete.backends,
        ),
    ] = None,
    pid: Annotated[
        int | None, typer.Option(help="Process whose life is the agent's life.", metavar="PID")
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="Free-form role, e.g. reviewer.", metavar="TEXT")
    ] = None,
    tool: Annotated[
        str | None,
        typer.Option(
            help="The AI CLI it runs, e.g. claude.",
            metavar="TOOL",
            autocompletion=complete.tool_names,
        ),
    ] = None,
    ram_gb: Annotated[
        float | None, typer.Option(help="RAM budget to reserve, in GiB.", metavar="GIB")
    ] = None,
    vram_gb: Annotated[
        float | None, typer.Option(help="GPU memory to reserve, in GiB.", metavar="GIB")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Take the name over from a live holder.")
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            help="If the --ram-gb/--vram-gb budget is not free, wait up to SECONDS for it.",
            metavar="SECONDS",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Join the mesh as NAME (or refresh an existing registration)."""
    from drasill_cli import agents

    agent = agents.register(
        state(ctx).mesh(),
        name,
        session=session,
        backend=backend,
        pid=pid,
        role=role,
        tool=tool,
        ram_gb=ram_gb,
        vram_gb=vram_gb,
        replace=replace,
        wait=wait,
    )
    show_agent(agent, "registered", json_out)


@command(
    app,
    "unregister",
    short_help="Leave the mesh, releasing locks, budget and tasks.",
    epilog=examples(
        "mesh unregister alice",
        "mesh unregister worker-1 --force   # even while it is still alive",
    ),
)
def unregister_cmd(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="The agent to remove.", metavar="NAME", autocompletion=complete.agent_names
        ),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Remove another agent even though it is still alive."),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Leave the mesh: the record goes, its locks and budget are released, its tasks requeued.

    Removing another agent (or with no identity) that is still alive needs --force. Its unread
    mail is archived: read it with `mesh history NAME --archived`.
    """
    from drasill_cli import agents

    cli = state(ctx)
    actor = cli.identity(as_, required=False) or "human"
    agent = agents.unregister(cli.mesh(), name, actor, force=force)
    show_agent(agent, "unregistered", json_out)
    if agent["archived"] and not json_out:
        say(
            f"its {agent['archived']} unread message(s) were archived; read them with "
            f"`mesh history {name} --archived`"
        )


@command(
    app,
    "heartbeat",
    short_help="Tell the mesh the agent is alive.",
    epilog=examples("mesh heartbeat --as alice", "DRASILL_AGENT=alice mesh heartbeat"),
)
def heartbeat_cmd(ctx: typer.Context, as_: AsOpt = None, json_out: JsonOpt = False) -> None:
    """Tell the mesh the agent is alive (any command run --as NAME does this too)."""
    from drasill_cli import agents

    cli = state(ctx)
    name = cli.require_identity(as_)
    agent = agents.heartbeat(cli.mesh(), name)
    show_agent(agent, "heartbeat", json_out)


@command(
    app,
    "agents",
    short_help="List active and idle agents with unread counts.",
    epilog=examples("mesh agents", "mesh agents --all   # dead ones too", "mesh agents --json"),
)
def agents_cmd(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include dead agents.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List active and idle agents with their unread counts."""
    from drasill_cli import agents

    found = agents.list_agents(state(ctx).mesh(), include_dead=all_)
    if json_out:
        print_json(found)
        return
    if not found:
        say("no agents registered (mesh register NAME)")
        return
    table(
        None,
        ["name", "state", "unread", "role", "tool", "last seen"],
        [
            [a["name"], a["state"], a["unread"], a["role"], a["tool"], ago(a["last_seen"])]
            for a in found
        ],
    )
