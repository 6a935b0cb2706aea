"""`mesh register`, `unregister`, `heartbeat`, `agents`."""

from __future__ import annotations

from typing import Annotated

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import (
    AsOpt,
    JsonOpt,
    RamGbOpt,
    RoleOpt,
    Shown,
    VramGbOpt,
    app,
    command,
    state,
)
from drasill_cli.cli.helpstyle import examples


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
            help="Terminal supervisor used to wake it: heimdall or tmux.",
            metavar="BACKEND",
            autocompletion=complete.supervisors,
        ),
    ] = None,
    pid: Annotated[
        int | None, typer.Option(help="Process whose life is the agent's life.", metavar="PID")
    ] = None,
    role: RoleOpt = None,
    tool: Annotated[
        str | None,
        typer.Option(
            help="The AI CLI it runs, e.g. claude.",
            metavar="TOOL",
            autocompletion=complete.tool_names,
        ),
    ] = None,
    ram_gb: RamGbOpt = None,
    vram_gb: VramGbOpt = None,
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
) -> Shown:
    """Join the mesh as NAME (or refresh an existing registration)."""
    from drasill_cli import agents

    agent = agents.register(
        state(ctx).mesh(),
        name,
        session=session,
        supervisor=backend,
        pid=pid,
        role=role,
        tool=tool,
        ram_gb=ram_gb,
        vram_gb=vram_gb,
        replace=replace,
        wait=wait,
    )
    return Shown(agent, views.agent, "registered")


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
) -> Shown:
    """Leave the mesh: the record goes, its locks and budget are released, its tasks requeued.

    Removing another agent (or with no identity) that is still alive needs --force. Its unread
    mail is archived: read it with `mesh history NAME --archived`.
    """
    from drasill_cli import agents

    cli = state(ctx)
    actor = cli.identity(as_, required=False) or "human"
    agent = agents.unregister(cli.mesh(), name, actor, force=force)
    return Shown(agent, views.unregistered)


@command(
    app,
    "heartbeat",
    short_help="Tell the mesh the agent is alive.",
    epilog=examples("mesh heartbeat --as alice", "DRASILL_AGENT=alice mesh heartbeat"),
)
def heartbeat_cmd(ctx: typer.Context, as_: AsOpt = None, json_out: JsonOpt = False) -> Shown:
    """Tell the mesh the agent is alive (any command run --as NAME does this too)."""
    from drasill_cli import agents

    cli = state(ctx)
    name = cli.require_identity(as_)
    agent = agents.heartbeat(cli.mesh(), name)
    return Shown(agent, views.agent, "heartbeat")


@command(
    app,
    "agents",
    short_help="List active and idle agents with unread counts.",
    epilog=examples("mesh agents", "mesh agents --all   # dead ones too", "mesh agents --json"),
)
def agents_cmd(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include dead agents.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="On a terminal, show every role whole (never cut).")
    ] = False,
    json_out: JsonOpt = False,
) -> Shown:
    """List active and idle agents with their unread counts (and hosts, on a mesh that spans
    hosts). Piped, each agent is one line; on a terminal long roles are cut to fit."""
    from drasill_cli import agents

    mesh = state(ctx).mesh()
    found = agents.list_agents(mesh, include_dead=all_)
    return Shown(found, views.agents, mesh.spans_hosts, wide)
