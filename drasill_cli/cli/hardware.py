"""`mesh hw`: capacity, measured use, and each agent's declared and measured budget."""

from __future__ import annotations

from typing import Any

import typer

from drasill_cli.cli.common import JsonOpt, app, command, print_json, say, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.cli.render import table


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(label: str, section: dict[str, Any]) -> str:
    return (
        f"{label}: total {_gb(section['total_gb'])} GiB, used {_gb(section['used_gb'])}, "
        f"available {_gb(section['available_gb'])}; budget limit {_gb(section['limit_gb'])}, "
        f"declared {_gb(section['declared_gb'])}, free {_gb(section['free_gb'])}, "
        f"agents use {_gb(section['agents_gb'])}"
    )


@command(
    app,
    "hw",
    short_help="Show RAM and GPU capacity, use and agent budgets.",
    epilog=examples("mesh hw", "mesh hw --json"),
)
def hw_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Show RAM and GPU capacity and use, and what each agent declared and really uses."""
    from drasill_cli import hardware

    report = hardware.hw_report(state(ctx).mesh())
    if json_out:
        print_json(report)
        return
    say(_summary("RAM", report["ram"]))
    gpu = report.get("gpu")
    if gpu is None:
        say("GPU: none found (no device, driver or NVML)")
    else:
        say(_summary("GPU", gpu))
        for device in gpu["devices"]:
            say(
                f"  gpu{device['index']} {device['name']}: {_gb(device['used_gb'])} of "
                f"{_gb(device['total_gb'])} GiB used, {len(device['processes'])} processes"
            )
    say(f"policy: {report['policy']}")
    if not report["agents"]:
        return
    columns = ["agent", "state", "ram declared", "ram used"]
    if gpu is not None:
        columns += ["vram declared", "vram used"]
    rows = []
    for agent in report["agents"]:
        row = [
            agent["name"],
            agent["state"] + (" (paused)" if agent["paused"] else ""),
            _gb(agent["declared"]["ram_gb"]),
            _gb(agent["measured"]["ram_gb"]),
        ]
        if gpu is not None:
            row += [_gb(agent["declared"]["vram_gb"]), _gb(agent["measured"]["vram_gb"])]
        rows.append([*row, ", ".join(o["resource"] for o in agent["over"]) or "-"])
    table(None, [*columns, "over"], rows)
