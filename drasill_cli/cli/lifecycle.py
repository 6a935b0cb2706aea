"""`mesh prune` and `mesh log`."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from drasill_cli import clock
from drasill_cli.cli import views
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
    epilog=examples("mesh log --since 10m", "mesh log --follow", "mesh log --json --since 1d"),
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
    json_out: JsonOpt = False,
) -> None:
    """The audit trail of every change, one event per line (JSON Lines with --json)."""
    from drasill_cli import audit

    if since:
        parse_since(since)  # a bad value is exit 2 before the mesh is opened
    mesh = state(ctx).mesh()
    # Counted back once the mesh is open: a database mesh's clock is the server's.
    start = parse_since(since) if since else None
    events = audit.follow(mesh, start) if follow else audit.read_events(mesh, start)
    try:
        for event in events:
            emit(Shown(event, views.log_event), json_out)
            if follow:
                sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        return
