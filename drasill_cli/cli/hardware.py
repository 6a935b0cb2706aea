"""`mesh hw`: capacity, measured use, and each agent's declared and measured budget."""

from __future__ import annotations

import typer

from drasill_cli.cli import views
from drasill_cli.cli.common import JsonOpt, Shown, app, command, state
from drasill_cli.cli.helpstyle import examples


@command(
    app,
    "hw",
    short_help="Show RAM and GPU capacity, use and agent budgets.",
    epilog=examples("mesh hw", "mesh hw --json"),
)
def hw_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
    """Show RAM and GPU capacity and use, and what each agent declared and really uses."""
    from drasill_cli import hardware

    report = hardware.hw_report(state(ctx).mesh())
    return Shown(report, views.hardware)
