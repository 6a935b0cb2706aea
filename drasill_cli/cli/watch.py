"""`mesh watch`, `mesh prompt`, `mesh launch`."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import (
    JsonOpt,
    RamGbOpt,
    RoleOpt,
    Shown,
    VramGbOpt,
    app,
    command,
    emit,
    state,
)
from drasill_cli.cli.helpstyle import examples


def _emit_event(event: dict[str, Any], json_out: bool) -> None:
    """One event of the long-running watch: a JSON object on stdout (JSON Lines: time, event,
    details), or a line for people on stderr; flushed at once."""
    from drasill_cli import clock

    emit(Shown({"time": clock.iso(), **event}, views.watch_event, event), json_out)
    sys.stdout.flush()


class _Collected:
    """Gathers one pass's events (each stamped with its time) for `watch --once`; with `echo`,
    each is also shown to people as it happens (a line on stderr)."""

    def __init__(self, *, echo: bool) -> None:
        self.events: list[dict[str, Any]] = []
        self.echo = echo

    def __call__(self, event: dict[str, Any]) -> None:
        from drasill_cli import clock

        stamped = {"time": clock.iso(), **event}
        self.events.append(stamped)
        if self.echo:
            views.watch_event(stamped, event)

    def summary(self, mesh_dir: str, started_at: str) -> dict[str, Any]:
        """The one JSON object `--once --json` prints."""
        from drasill_cli import clock

        def agents(kind: str) -> list[str]:
            return sorted({e["agent"] for e in self.events if e["event"] == kind})

        return {
            "mesh": mesh_dir,
            "started_at": started_at,
            "finished_at": clock.iso(),
            "woken": agents("wake"),
            "busy": agents("busy"),
            "dead": agents("dead"),
            "errors": sum(1 for e in self.events if e["event"] == "error"),
            "events": self.events,
        }


@command(
    app,
    "watch",
    short_help="Wake idle agents with new mail; apply lifecycle and budgets.",
    epilog=examples(
        "mesh watch           # runs until Ctrl-C; one per mesh",
        "mesh watch --once    # one full pass, then exit (cron)",
        "See docs/howto-systemd-watch.md to run it as a service.",
    ),
)
def watch_cmd(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Do one full pass (wake, lifecycle, budgets), then exit.")
    ] = False,
    json_out: JsonOpt = False,
) -> Shown | None:
    """Wake idle agents that have new mail; apply the lifecycle and budgets. One per mesh.

    Without --json, events go to stderr as lines for people. With --json, the long-running
    watch prints one JSON object per event on stdout (JSON Lines: time, event, details); with
    --once --json it prints one object for the pass: mesh, started_at, finished_at, woken, busy
    and dead (agent names), errors (a count) and events (the list of event objects).
    """
    from drasill_cli import clock, watcher

    mesh = state(ctx).mesh()
    with watcher.single_instance(mesh) as guard:
        if once:  # people see the events as they happen; --json gets one object at the end
            started_at = clock.iso()
            collected = _Collected(echo=not json_out)
            watcher.Watcher(mesh, collected).full_pass()
            return Shown(collected.summary(mesh.location, started_at), views.watch_pass)
        watch = watcher.Watcher(mesh, lambda event: _emit_event(event, json_out), guard)
        previous = {
            signum: signal.signal(signum, lambda _signum, _frame: watch.stop())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            watch.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return None


@command(
    app,
    "prompt",
    short_help="Print the block an agent needs in its system prompt.",
    epilog=examples(
        "mesh prompt alice",
        'claude --append-system-prompt "$(mesh prompt alice)"',
    ),
)
def prompt_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="The agent (default: $DRASILL_AGENT, else a text for any agent).",
            metavar="NAME",
            autocompletion=complete.agent_names,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Print the short block an agent needs in its system prompt to use the mesh."""
    import os

    from drasill_cli import onboarding

    del ctx
    name = name or os.environ.get("DRASILL_AGENT") or None
    text = onboarding.prompt(name)
    return Shown({"name": name, "prompt": text}, views.prompt)


@command(
    app,
    "launch",
    short_help="Start an agent in a supervised session and register it.",
    epilog=examples(
        "mesh launch alice                       # claude, under heimdall or tmux",
        "mesh launch bob --tool codex --backend tmux",
        "mesh launch carol -- --model opus       # arguments for the tool after --",
        "mesh launch dave --hooks                # install claude's mesh hooks first",
    ),
)
def launch_cmd(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="The agent name to register it under.", metavar="NAME")
    ],
    tool_args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments for the tool, after --.", metavar="TOOL_ARGS"),
    ] = None,
    tool: Annotated[
        str,
        typer.Option(
            help="The AI CLI to start (see mesh tools).",
            metavar="TOOL",
            autocompletion=complete.tool_names,
        ),
    ] = "claude",
    backend: Annotated[
        str | None,
        typer.Option(
            help="Terminal supervisor: heimdall or tmux (default: heimdall if hm exists).",
            metavar="BACKEND",
            autocompletion=complete.supervisors,
        ),
    ] = None,
    role: RoleOpt = None,
    ram_gb: RamGbOpt = None,
    vram_gb: VramGbOpt = None,
    hooks: Annotated[
        bool,
        typer.Option(
            "--hooks",
            help="First install the mesh's hooks for the tool (claude, codex, gemini, "
            "copilot) in this git work tree, else in your home: mail reaches the agent and "
            "edits of held files are refused (see mesh hooks).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> Shown:
    """Start an agent in a detached supervised session with the mesh prompt, and register it."""
    from drasill_cli import onboarding
    from drasill_cli.hooks import install

    found: list[dict[str, Any] | None] = [None]

    def before_start() -> None:
        found[0] = install.for_launch(tool, apply=hooks)

    agent = onboarding.launch(
        state(ctx).mesh(),
        name,
        tool=tool,
        supervisor=backend,
        tool_args=tool_args or (),
        role=role,
        ram_gb=ram_gb,
        vram_gb=vram_gb,
        before_start=before_start,
    )
    hooks_found = found[0]
    return Shown(
        {**agent, "hooks": hooks_found},
        views.launched,
        tool,
        then=lambda: views.launch_hooks(hooks_found),
    )
