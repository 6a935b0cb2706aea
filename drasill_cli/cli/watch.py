"""`mesh watch`, `mesh prompt`, `mesh launch`."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from drasill_cli.cli import complete
from drasill_cli.cli.common import JsonOpt, app, command, print_json, say, state
from drasill_cli.cli.helpstyle import examples

_HUMAN: dict[str, str] = {
    "start": "watching {mesh} (pid {pid})",
    "stop": "stopped",
    "queued": "{agent}: {messages} new message(s) waiting for a wake",
    "wake": "woke {agent} ({backend} {session}): {text}",
    "busy": "{agent} is busy; its wake waits until it is idle",
    "blocked": "{agent} cannot be woken: {reason}",
    "dead": "{agent}: {backend} session {session} is gone; reported dead",
    "retry": "{agent}: wake failed ({error}); retrying in {in_s:g} s",
    "failed": "{agent}: wake failed {attempts} times ({error}); waiting for new mail",
    "consumed": "{agent} has read the mail it was woken for",
    "warning": "warning: {message}",
    "error": "error in {job} {agent}: {error}",
}


# What a lifecycle pass did, per key of its report: a count goes in {n}.
_LIFECYCLE: dict[str, str] = {
    "marked_dead": "{n} agent(s) marked dead",
    "removed": "{n} agent(s) removed",
    "archived_messages": "unread mail of {n} agent(s) archived",
    "locks_released": "{n} lock(s) released",
    "tasks_requeued": "{n} task(s) requeued",
    "tasks_abandoned": "{n} task(s) abandoned",
    "budgets_released": "{n} budget(s) released",
    "temp_files_removed": "{n} stale temp file(s) removed",
    "history_expired": "{n} old message(s) deleted",
    "attachments_removed": "attachments of {n} undelivered message(s) removed",
}
_BUDGET_ACTION = {
    "warn": "warned",
    "pause": "paused",
    "kill": "killed",
    "resume": "resumed",
    "report": "not acting on",
}


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return str(value)


def _lifecycle_line(event: dict[str, Any]) -> str:
    parts = [
        _LIFECYCLE.get(key, key.replace("_", " ") + " {n}").format(n=value)
        for key, value in event.items()
        if key not in ("event", "time")
    ]
    return "lifecycle: " + (", ".join(parts) or "nothing to do") + " (see mesh log)"


def _hardware_line(event: dict[str, Any]) -> str:
    done = _BUDGET_ACTION.get(str(event.get("action")), str(event.get("action")))
    over = ", ".join(
        f"uses {o['measured_gb']:g} GiB of {o['resource']} (declared {o['declared_gb']:g})"
        for o in event.get("over") or []
        if isinstance(o, dict) and {"measured_gb", "resource", "declared_gb"} <= set(o)
    )
    why = over or event.get("reason") or "over its budget"
    if event.get("action") == "report":
        why = f"{why}; its processes are not provably its own: {event.get('reason')}"
    return f"budget: {done} {event.get('agent')}: {why}"


def describe(event: dict[str, Any]) -> str:
    """One watch event as a sentence for people: never raw JSON."""
    kind = event["event"]
    if kind == "lifecycle":
        return _lifecycle_line(event)
    if kind == "hardware":
        return _hardware_line(event)
    template = _HUMAN.get(kind)
    try:
        text = template.format(**event) if template else None
    except (KeyError, ValueError):
        text = None
    if text is None:
        details = "; ".join(f"{k} {_plain(v)}" for k, v in event.items() if k != "event")
        text = f"{kind}: {details}" if details else str(kind)
    return text


def _human(event: dict[str, Any]) -> None:
    """One line per event on stderr, for people and journald."""
    from drasill_cli import clock
    from drasill_cli.cli.render import printable

    sys.stderr.write(f"{clock.iso()[11:19]} {printable(describe(event), lines=False)}\n")
    sys.stderr.flush()


def _json_line(event: dict[str, Any]) -> None:
    """One JSON object per event on stdout (JSON Lines), flushed at once."""
    from drasill_cli import clock

    print_json({"time": clock.iso(), **event})
    sys.stdout.flush()


class _Collected:
    """Gathers one pass's events (each stamped with its time) for `watch --once --json`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        from drasill_cli import clock

        self.events.append({"time": clock.iso(), **event})

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
) -> None:
    """Wake idle agents that have new mail; apply the lifecycle and budgets. One per mesh.

    Without --json, events go to stderr as lines for people. With --json, the long-running
    watch prints one JSON object per event on stdout (JSON Lines: time, event, details); with
    --once --json it prints one object for the pass: mesh, started_at, finished_at, woken, busy
    and dead (agent names), errors (a count) and events (the list of event objects).
    """
    from drasill_cli import clock, watcher

    mesh = state(ctx).mesh()
    with watcher.single_instance(mesh) as guard:
        if once:
            started_at = clock.iso()
            collected = _Collected()
            watcher.Watcher(mesh, collected if json_out else _human).full_pass()
            if json_out:
                print_json(collected.summary(mesh.location, started_at))
            return
        watch = watcher.Watcher(mesh, _json_line if json_out else _human, guard)
        previous = {
            signum: signal.signal(signum, lambda _signum, _frame: watch.stop())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            watch.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


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
) -> None:
    """Print the short block an agent needs in its system prompt to use the mesh."""
    import os

    from drasill_cli import onboarding

    del ctx
    name = name or os.environ.get("DRASILL_AGENT") or None
    text = onboarding.prompt(name)
    if json_out:
        print_json({"name": name, "prompt": text})
    else:
        say(text)


@command(
    app,
    "launch",
    short_help="Start an agent in a supervised session and register it.",
    epilog=examples(
        "mesh launch alice                       # claude, under heimdall or tmux",
        "mesh launch bob --tool codex --backend tmux",
        "mesh launch carol -- --model opus       # arguments for the tool after --",
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
            help="Session backend: heimdall or tmux (default: heimdall if hm exists).",
            metavar="BACKEND",
            autocompletion=complete.backends,
        ),
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="Free-form role, e.g. reviewer.", metavar="TEXT")
    ] = None,
    ram_gb: Annotated[
        float | None, typer.Option(help="RAM budget to reserve, in GiB.", metavar="GIB")
    ] = None,
    vram_gb: Annotated[
        float | None, typer.Option(help="GPU memory to reserve, in GiB.", metavar="GIB")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start an agent in a detached supervised session with the mesh prompt, and register it."""
    from drasill_cli import onboarding

    agent = onboarding.launch(
        state(ctx).mesh(),
        name,
        tool=tool,
        backend=backend,
        tool_args=tool_args or (),
        role=role,
        ram_gb=ram_gb,
        vram_gb=vram_gb,
    )
    if json_out:
        print_json(agent)
        return
    attach = (
        f"tmux attach -t {agent['session']}"
        if agent["backend"] == "tmux"
        else f"hm attach {agent['session']}"
    )
    say(f"launched {agent['name']} ({tool}) in {agent['backend']} session {agent['session']}")
    sys.stderr.write(f"attach with: {attach}\n")
    if not agent["prompt_passed"]:
        sys.stderr.write(
            f"note: {tool} has no known system-prompt flag; give it the text of "
            f"`mesh prompt {name}` yourself\n"
        )
