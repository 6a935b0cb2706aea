"""Commands for people: `status`, `doctor`, `tools`, `bridge`, `demo`.

The status screen is drawn with rich and fits 80 columns: long lists are cut to a few rows
with a count of the rest, so the screen stays one screen with hundreds of agents.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drasill_cli.cli import complete
from drasill_cli.cli.common import AsOpt, JsonOpt, app, command, note, print_json, say, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.cli.render import ago, since, span, table

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

TASK_ORDER = ("working", "claimed", "review", "queued", "failed", "abandoned", "completed")
OPEN_TASKS = ("working", "claimed", "review", "queued")
BAR_WIDTH = 24
STATE_STYLE = {"active": "green", "idle": "yellow", "dead": "red"}


class Rows:
    """How many rows of each section to show."""

    def __init__(self, agents: int, tasks: int, locks: int, recent: int) -> None:
        self.agents = agents
        self.tasks = tasks
        self.locks = locks
        self.recent = recent


FULL = Rows(agents=20, tasks=10, locks=10, recent=8)
COMPACT = Rows(agents=10, tasks=6, locks=5, recent=5)


# ---- the status screen -----------------------------------------------------------------------


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def _pair(declared: float | None, measured: float | None) -> str:
    if declared is None and measured is None:
        return "-"
    return f"{_gb(declared)}/{_gb(measured)}"


def _until(timestamp: str) -> str:
    from drasill_cli import clock

    return f"in {span(clock.parse_iso(timestamp) - clock.now())}"


def _short_path(path: str, width: int = 34) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3) :]


def _more(shown: int, total: int, hint: str) -> str | None:
    return f"... and {total - shown} more ({hint})" if total > shown else None


def _grid(*columns: str) -> Any:
    from rich.table import Table

    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def _agents_section(snap: dict[str, Any], rows: Rows) -> list[RenderableType]:
    from rich.text import Text

    agents = snap["agents"]
    counts = snap["counts"]["agents"]
    summary = ", ".join(f"{counts[s]} {s}" for s in ("active", "idle", "dead") if counts.get(s))
    title = Text.assemble(
        ("Agents", "bold"), f" ({len(agents)}{': ' + summary if summary else ''})"
    )
    if not agents:
        return [title, Text("  none registered (mesh register NAME)", style="dim")]
    grid = _grid("name", "state", "role", "tool", "unread", "seen", "ram GB", "vram GB")
    for agent in agents[: rows.agents]:
        grid.add_row(
            agent["name"],
            Text(agent["state"], style=STATE_STYLE.get(agent["state"], "")),
            agent.get("role") or "-",
            agent.get("tool") or "-",
            str(agent["unread"]) if agent["unread"] else "-",
            since(agent["last_seen"]),
            _pair(agent["declared"]["ram_gb"], agent["measured"]["ram_gb"]),
            _pair(agent["declared"]["vram_gb"], agent["measured"]["vram_gb"]),
        )
    out: list[RenderableType] = [title, grid]
    more = _more(rows.agents, len(agents), "mesh agents --all")
    if more:
        out.append(Text(more, style="dim"))
    return out


def _tasks_section(snap: dict[str, Any], rows: Rows) -> list[RenderableType]:
    from rich.text import Text

    tasks = snap["tasks"]
    counts = snap["counts"]["tasks"]
    summary = " · ".join(f"{state} {counts[state]}" for state in TASK_ORDER if counts.get(state))
    title = Text.assemble(("Tasks", "bold"), f" ({len(tasks)}{': ' + summary if summary else ''})")
    open_tasks = [t for t in tasks if t["state"] in OPEN_TASKS]
    open_tasks.sort(key=lambda t: (OPEN_TASKS.index(t["state"]), -t["priority"], t["id"]))
    if not open_tasks:
        return [title, Text("  nothing open (mesh task add TITLE)", style="dim")]
    grid = _grid("id", "state", "pri", "holder", "title")
    for task in open_tasks[: rows.tasks]:
        grid.add_row(
            task["id"][:15],
            task["state"],
            str(task["priority"]),
            task.get("claimed_by") or "-",
            task["title"],
        )
    out: list[RenderableType] = [title, grid]
    more = _more(rows.tasks, len(open_tasks), "mesh task list")
    if more:
        out.append(Text(more, style="dim"))
    return out


def _locks_section(snap: dict[str, Any], rows: Rows) -> list[RenderableType]:
    from rich.text import Text

    held = snap["locks"]
    title = Text.assemble(("Locks", "bold"), f" ({len(held)})")
    if not held:
        return [title, Text("  none held", style="dim")]
    grid = _grid("path", "mode", "holder", "expires")
    for lock in held[: rows.locks]:
        grid.add_row(
            _short_path(lock["path"]), lock["mode"], lock["holder"], _until(lock["expires_at"])
        )
    out: list[RenderableType] = [title, grid]
    more = _more(rows.locks, len(held), "mesh locks")
    if more:
        out.append(Text(more, style="dim"))
    return out


def _bar(label: str, section: dict[str, Any]) -> RenderableType:
    from rich.text import Text

    limit = section["limit_gb"] or 0.0
    declared = section["declared_gb"]
    share = min(1.0, declared / limit) if limit > 0 else 0.0
    filled = round(share * BAR_WIDTH)
    style = "red" if share >= 0.9 else "yellow" if share >= 0.7 else "green"
    return Text.assemble(
        f"  {label:<4} ",
        ("█" * filled, style),
        ("░" * (BAR_WIDTH - filled), "dim"),
        f" {declared:.1f}/{limit:.1f} GB declared, agents use {section['agents_gb']:.1f},"
        f" free {section['free_gb']:.1f}",
    )


def _budgets_section(snap: dict[str, Any]) -> list[RenderableType]:
    from rich.text import Text

    budgets = snap["budgets"]
    out: list[RenderableType] = [
        Text.assemble(("Budgets", "bold"), f" (policy {budgets['policy']})"),
        _bar("RAM", budgets["ram"]),
    ]
    if "gpu" in budgets:
        out.append(_bar("GPU", budgets["gpu"]))
    else:
        out.append(Text("  GPU  none found", style="dim"))
    return out


def describe_event(event: dict[str, Any]) -> str:
    """One audit event as a short line: messages as `from -> to`, the rest as `actor event`."""
    actor = event.get("actor") or "-"
    kind = str(event.get("event"))
    if kind == "send":
        urgent = " (urgent)" if event.get("priority") == "urgent" else ""
        return f"{actor} -> {event.get('to')}{urgent}"
    if kind == "consume":
        return f"{actor} read a message from {event.get('sender')}"
    target = event.get("task") or event.get("agent") or ""
    if not target and isinstance(event.get("paths"), list) and event["paths"]:
        target = _short_path(str(event["paths"][0]), 30)
    return f"{actor} {kind} {target}".rstrip()


def _recent_section(snap: dict[str, Any], rows: Rows) -> list[RenderableType]:
    from rich.text import Text

    recent = snap["recent"]
    title = Text("Recent", style="bold")
    if not recent:
        return [title, Text("  no activity yet", style="dim")]
    grid = _grid("when", "what")
    for event in recent[: rows.recent]:
        grid.add_row(ago(event.get("time")), describe_event(event))
    return [title, grid]


def status_screen(snap: dict[str, Any], rows: Rows = FULL) -> RenderableType:
    """The whole status screen as one rich renderable."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [
        Text.assemble(("mesh status", "bold"), f"  {snap['mesh_dir']}", style=""),
    ]
    for section in (
        _agents_section(snap, rows),
        _tasks_section(snap, rows),
        _locks_section(snap, rows),
        _budgets_section(snap),
        _recent_section(snap, rows),
    ):
        parts.append(Text(""))
        parts.extend(section)
    return Group(*parts)


def _console(width: int | None = None) -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def _watch(ctx: typer.Context, json_out: bool) -> None:
    from drasill_cli import status

    mesh = state(ctx).mesh()
    updates = status.watch(mesh)
    if json_out:
        for snap in updates:
            print_json(snap)
            sys.stdout.flush()
        return
    if not sys.stdout.isatty():
        _watch_plain(updates)
        return
    from rich.live import Live

    console = _console()
    with Live(console=console, screen=True, auto_refresh=False) as live:
        for snap in updates:
            live.update(status_screen(snap, COMPACT), refresh=True)


def _watch_plain(updates: Iterator[dict[str, Any]]) -> None:
    """Not a terminal (a pipe, a log file): a fresh plain render after each change, each after
    a separator line with its time; a quiet refresh that changed nothing prints nothing."""
    from drasill_cli import status

    console = _console()
    previous: Any = None
    for snap in updates:
        key = status.change_key(snap)
        if previous is not None and key == previous:
            continue
        if previous is not None:
            say("")
        previous = key
        say(f"---- {snap['generated_at']} " + "-" * 40)
        console.print(status_screen(snap))
        sys.stdout.flush()


@command(
    app,
    "status",
    short_help="Show one screen: agents, tasks, locks, budgets, traffic.",
    epilog=examples(
        "mesh status",
        "mesh status --watch   # live; q or Ctrl-C quits",
        "mesh status --json",
    ),
)
def status_cmd(
    ctx: typer.Context,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Keep the screen live, redrawn on every change (not on a terminal: a new "
            "screen is printed after each change).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """One screen: agents, unread mail, tasks, locks, budgets and recent traffic.

    With --json, one object with agents, tasks, locks, budgets and recent (with --watch, one
    such object per line at every change).
    """
    from drasill_cli import status

    if watch:
        try:
            _watch(ctx, json_out)
        except KeyboardInterrupt:
            return
        return
    snap = status.snapshot(state(ctx).mesh())
    if json_out:
        print_json(snap)
        return
    _console().print(status_screen(snap))


# ---- doctor and tools ------------------------------------------------------------------------

MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@command(
    app,
    "doctor",
    short_help="Check the set-up and say how to fix each problem.",
    epilog=examples("mesh doctor", "mesh --mesh-dir /srv/mesh doctor --json"),
)
def doctor_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Check what the mesh needs and what is installed, and say how to fix each problem.

    Exit 0 when the required parts (Python, config, a safe writable mesh directory) are fine,
    else 1. heimdall, tmux, git, the AI CLIs and NVML are optional: warnings only.
    """
    from drasill_cli import doctor

    report = doctor.run(state(ctx).mesh_dir)
    if json_out:
        print_json(report)
    else:
        for check in report["checks"]:
            need = " (required)" if check["required"] and check["status"] == "fail" else ""
            say(f"{MARK[check['status']]} {check['name']:<10} {check['detail']}{need}")
            if check["fix"] and check["status"] != "ok":
                say(f"{'':15} fix: {check['fix']}")
        verdict = "ready" if report["ok"] else "not ready: fix the FAIL lines above"
        say(f"mesh dir {report['mesh_dir']}: {verdict}")
    if not report["ok"]:
        raise typer.Exit(1)


@command(
    app,
    "tools",
    short_help="List the AI coding CLIs mesh knows and which are installed.",
    epilog=examples("mesh tools", "mesh tools --json"),
)
def tools_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the AI coding CLIs mesh knows, which are on PATH, and how bridge runs each."""
    from drasill_cli import tools
    from drasill_cli.config import load_config

    del ctx  # only the config matters: the mesh directory need not exist or be usable
    rows = tools.detect(load_config())
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["tool", "installed", "version", "runs"],
        [
            [
                row["name"],
                "yes" if row["installed"] else "no",
                row["version"] or "-",
                " ".join(row["command"]),
            ]
            for row in rows
        ],
    )
    if not any(row["installed"] for row in rows):
        note('none installed; add your own with [tools.NAME] command = ["mycli", "{prompt}"]')


# ---- bridge and demo -------------------------------------------------------------------------


def _progress(json_out: bool) -> Any:
    def report(event: str, details: dict[str, Any]) -> None:
        if event == "claimed":
            task = details["task"]
            note(f"claimed {task['id']}: {task['title']}")
        elif event == "running":
            note(f"running {details['argv'][0]} in {details['cwd']}")
        elif event == "finished":
            task = details["task"]
            note(f"{task['state']} {task['id']} (exit status {details['exit_status']})")
            if json_out:
                print_json(details)
                sys.stdout.flush()
        elif event == "waiting":
            note(f"waiting for work: {details['reason']}")
        elif event == "skipped":
            note(f"skipped: {details['reason']}")

    return report


def _say_result(result: dict[str, Any]) -> None:
    """One handled task, as a human line: `STATE ID: TITLE`."""
    task = result["task"]
    say(f"{task['state']} {task['id']}: {task['title']}")


@command(
    app,
    "bridge",
    short_help="Work as a task worker that runs an AI CLI on each task.",
    epilog=examples(
        "mesh bridge --tool claude --as worker-1",
        "mesh bridge --tool codex --as worker-2 --once   # one task at most",
    ),
)
def bridge_cmd(
    ctx: typer.Context,
    tool: Annotated[
        str,
        typer.Option(
            "--tool",
            help="The AI CLI to run, e.g. claude (see mesh tools).",
            metavar="TOOL",
            autocompletion=complete.tool_names,
        ),
    ],
    as_: AsOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Handle at most one task, then exit (1: none to claim).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Work as a task worker: claim the next task, run the AI CLI on it, record the result.

    Registers the identity with the tool, then loops: claim, mark working, run the tool
    non-interactively on the task's title and body in the task's directory (heartbeating),
    and mark the task done (exit 0) or failed, with the exit status and the tail of stdout and
    stderr as the result. Waits for new tasks between runs. With --json, one JSON object per
    task handled.
    """
    from drasill_cli import bridge

    cli = state(ctx)
    name = cli.require_identity(as_)
    mesh = cli.mesh()
    profile = bridge.start(mesh, name, tool)
    if once:
        result = bridge.work_once(mesh, name, profile, _progress(False))
        if json_out:
            print_json(result)
        else:
            _say_result(result)
        return
    try:
        for result in bridge.serve(mesh, name, profile, _progress(json_out)):
            if not json_out:
                _say_result(result)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return


@command(
    app,
    "demo",
    short_help="Run simulated agents on a throwaway mesh and show it.",
    epilog=examples("mesh demo", "mesh demo --keep   # then explore it with the printed command"),
)
def demo_cmd(
    ctx: typer.Context,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo mesh and print where it is.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run three simulated agents on a throwaway mesh, then show the status screen.

    The demo uses a new temporary directory and the default config: your own mesh is never
    touched.
    """
    from drasill_cli import demo

    result = demo.run(keep)
    if json_out:
        print_json(result)
        return
    for step in result["steps"]:
        note(f"- {step}")
    note("")
    _console().print(status_screen(result["status"]))
    if result["kept"]:
        note(f"\nthe demo mesh is kept: mesh --mesh-dir {result['kept']} status")
