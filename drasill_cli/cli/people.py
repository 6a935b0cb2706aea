"""Commands for people: `status`, `doctor`, `tools`, `bridge`, `demo`.

Their views are in `drasill_cli.cli.views`; the status screen itself is drawn by
`drasill_cli.cli.statusview`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import AsOpt, JsonOpt, Shown, app, command, emit, note, state
from drasill_cli.cli.helpstyle import examples


@contextlib.contextmanager
def _quit_on_q(stop: threading.Event) -> Iterator[None]:
    """While the live screen runs, read keys without echo; `q` sets `stop`."""
    import os
    import select
    import termios
    import tty

    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                stop.set()

    reader = threading.Thread(target=read, name="status-keys", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _watch(ctx: typer.Context, json_out: bool) -> None:
    from drasill_cli import status

    mesh = state(ctx).mesh()
    if not sys.stdout.isatty() or json_out:  # a new screen (or JSON object) after each change
        plain = views.ScreensOnChange()
        for snap in status.watch(mesh):
            emit(Shown(snap, plain), json_out)
            sys.stdout.flush()
        return
    from rich.live import Live

    from drasill_cli.cli.statusview import fit_rows, status_screen

    console = views.console()
    stop = threading.Event()
    with (
        _quit_on_q(stop),
        Live(console=console, screen=True, auto_refresh=False) as live,
    ):
        for snap in status.watch(mesh, stop=stop):
            width, height = console.size
            screen = status_screen(snap, fit_rows(snap, height), width=width, compact=True)
            live.update(screen, refresh=True)


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
            help="Keep the screen live, redrawn on every change; q quits, Ctrl-C exits 130 "
            "(not on a terminal: a new screen is printed after each change).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> Shown | None:
    """One screen: agents, unread mail, tasks, locks, budgets and recent traffic.

    Paths are shown relative to the working directory (or ~) and shortened from the middle
    only when the width demands it; ids are shown whole; what does not fit is counted. With
    --json, one object with agents, tasks, locks, budgets and recent (with --watch, one such
    object per line at every change).
    """
    from drasill_cli import status

    if watch:
        try:
            _watch(ctx, json_out)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        return None
    return Shown(status.snapshot(state(ctx).mesh()), views.status)


# ---- doctor and tools ------------------------------------------------------------------------


@command(
    app,
    "doctor",
    short_help="Check the set-up and say how to fix each problem.",
    epilog=examples("mesh doctor", "mesh --mesh-dir /srv/mesh doctor --json"),
)
def doctor_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
    """Check what the mesh needs and what is installed, and say how to fix each problem.

    Exit 0 when the required parts (Python, config, a safe writable mesh directory) are fine,
    else 1. heimdall, tmux, git, the AI CLIs and NVML are optional: warnings only.
    """
    from drasill_cli import doctor

    report = doctor.run(state(ctx).mesh_dir, state(ctx).mesh_url)
    failed = [c["name"] for c in report["checks"] if c["required"] and c["status"] == "fail"]
    if failed:  # the contract's error envelope, beside the whole report (JSON only)
        error = {
            "code": "doctor-failed",
            "message": f"required checks failed: {', '.join(failed)}; each check's `fix` "
            "says what to do",
        }
        return Shown({**report, "error": error}, views.doctor, exit_code=0 if report["ok"] else 1)
    return Shown(report, views.doctor, exit_code=0 if report["ok"] else 1)


@command(
    app,
    "tools",
    short_help="List the AI coding CLIs mesh knows and which are installed.",
    epilog=examples("mesh tools", "mesh tools --json"),
)
def tools_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
    """List the AI coding CLIs mesh knows, which are on PATH, and how bridge runs each."""
    from drasill_cli import tools
    from drasill_cli.config import load_config

    del ctx  # only the config matters: the mesh directory need not exist or be usable
    rows = tools.detect(load_config())
    return Shown(rows, views.tools)


# ---- bridge and demo -------------------------------------------------------------------------


def _progress() -> Any:
    def report(event: str, details: dict[str, Any]) -> None:
        if event == "claimed":
            task = details["task"]
            note(f"claimed {task['id']}: {task['title']}")
        elif event == "running":
            note(f"running {details['argv'][0]} in {details['cwd']}")
        elif event == "finished":
            task = details["task"]
            note(f"{task['state']} {task['id']} (exit status {details['exit_status']})")
        elif event == "waiting":
            note(f"waiting for work: {details['reason']}")
        elif event == "skipped":
            note(f"skipped: {details['reason']}")

    return report


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
) -> Shown | None:
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
        return Shown(bridge.work_once(mesh, name, profile, _progress()), views.bridge_result)
    try:
        for result in bridge.serve(mesh, name, profile, _progress()):
            emit(Shown(result, views.bridge_result), json_out)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return None


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
) -> Shown:
    """Run three simulated agents on a throwaway mesh, then show the status screen.

    The demo uses a new temporary directory and the default config: your own mesh is never
    touched.
    """
    from drasill_cli import demo

    return Shown(demo.run(keep), views.demo)
