"""`mesh prune` and `mesh log`."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer

from drasill_cli import clock
from drasill_cli.cli import complete, views
from drasill_cli.cli.common import JsonOpt, Shown, app, command, emit, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """An ISO-8601 time, or a duration back from now such as `90s`, `10m`, `2h`, `1d`."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return clock.now() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return clock.parse_iso(text)
    except ValueError:
        raise InvalidInput(
            f"--since {text!r} is neither an ISO-8601 time (2026-11-23T10:00:00Z) "
            "nor a duration such as 30s, 10m, 2h or 1d",
            code="invalid-since",
        ) from None


@command(
    app,
    "prune",
    short_help="Apply the lifecycle now: mark the dead, free and clean up.",
    epilog=examples(
        "mesh prune --dry-run   # see what would change",
        "mesh prune",
        "*/5 * * * * mesh prune   # from cron (see docs/howto-cron-prune.md)",
    ),
)
def prune_cmd(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    json_out: JsonOpt = False,
) -> Shown:
    """Apply the lifecycle now: mark the dead, free their locks and tasks, archive, clean up.

    Tasks and locks still held by names no longer registered are freed too (the tasks are
    requeued with their attempts unchanged).

    Safe from cron, concurrently, at any rate; prints nothing when nothing changed (with
    --dry-run it says so).
    """
    from drasill_cli import lifecycle

    report = lifecycle.prune(state(ctx).mesh(), dry_run=dry_run)
    return Shown(report, views.prune)


@command(
    app,
    "log",
    short_help="Show the audit trail of every change.",
    epilog=examples(
        "mesh log --since 10m",
        "mesh log --follow --agent alice",
        "mesh log --task t-0007",
        "mesh log --json --since 1d --kind task-claim",
    ),
)
def log_cmd(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they happen.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only events from this time (ISO-8601, or 10m, 2h, 1d ago).", metavar="TIME"
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="Only events done by this agent.",
            metavar="NAME",
            autocompletion=complete.agent_names,
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="Only events of this kind (task-claim, lock, ...).", metavar="KIND"
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Only events about this task.",
            metavar="ID",
            autocompletion=complete.task_ids,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The audit trail of every change, one event per line (JSON Lines with --json)."""
    from drasill_cli import audit, tasks

    if since:
        parse_since(since)  # a bad value is exit 2 before the mesh is opened
    audit.check_filters(agent, kind)
    mesh = state(ctx).mesh()
    # Counted back once the mesh is open: a database mesh's clock is the server's.
    start = parse_since(since) if since else None
    task_id = None if task is None else tasks.resolve_id(mesh, task)
    chosen: dict[str, Any] = {"agent": agent, "kind": kind, "task": task_id}
    events = (
        audit.follow(mesh, start, **chosen) if follow else audit.read_events(mesh, start, **chosen)
    )
    try:
        for event in events:
            emit(Shown(event, views.log_event), json_out)
            if follow:
                sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        return
