"""The `mesh` console script: `mesh hook CLI EVENT` answers a hook without loading the command
layer; everything else runs the Typer app.

An agent CLI runs `mesh hook CLI EVENT` on every tool call, so that path must stay fast: this
module imports nothing but `sys` and `os` before it knows which way to go, and the hook path
never imports typer, rich or pydantic (tests/test_hook_cli.py guards its import set). The
global options `--mesh-dir DIR` and `--mesh-url URL` may come before `hook`, as before any
command. Any other shape (`mesh hook --help`, a missing word) goes to the Typer app, whose
hidden `hook` command says what it takes.
"""

from __future__ import annotations

import os
import sys

_LOCATION_OPTIONS = {"--mesh-dir": "mesh_dir", "--mesh-url": "mesh_url"}


def hook_call(args: list[str]) -> dict[str, str] | None:
    """The parts of a `[--mesh-dir DIR | --mesh-url URL]... hook CLI EVENT` command line
    (keys `cli`, `event`, and `mesh_dir`/`mesh_url` when given), or None for any other."""
    found: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0] != "hook":
        word = rest.pop(0)
        name, equals, value = word.partition("=")
        if name not in _LOCATION_OPTIONS or _LOCATION_OPTIONS[name] in found:
            return None
        if not equals:
            if not rest:
                return None
            value = rest.pop(0)
        found[_LOCATION_OPTIONS[name]] = value
    if len(rest) != 3 or rest[1].startswith("-") or rest[2].startswith("-"):
        return None
    return {**found, "cli": rest[1], "event": rest[2]}


def main() -> None:
    """Run `mesh`."""
    call = hook_call(sys.argv[1:])
    if call is not None:
        from drasill_cli.hooks.run import main as hook

        sys.exit(
            hook(
                call["cli"],
                call["event"],
                sys.stdin,
                sys.stdout,
                sys.stderr,
                os.environ,
                mesh_dir=call.get("mesh_dir"),
                mesh_url=call.get("mesh_url"),
            )
        )
    from drasill_cli.cli.app import main as run_app

    run_app()
