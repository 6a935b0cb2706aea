"""The `mesh` entry point: global options, command loading, usage errors as JSON.

Commands live in one module per area and register themselves on import. `main` imports only
the module of the command being run (Typer inspects every registered command's signature on
each call, so loading all of them would add tens of milliseconds to every `mesh send`); help,
completion and unknown commands load them all.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from drasill_cli import __version__
from drasill_cli.cli.common import CliState, app, one_line, print_json

# Command name -> the module in drasill_cli.cli that defines it; modules in help order.
COMMAND_MODULES: dict[str, str] = {
    "register": "agents",
    "unregister": "agents",
    "heartbeat": "agents",
    "agents": "agents",
    "send": "messages",
    "inbox": "messages",
    "history": "messages",
    "task": "tasks",
    "claim": "tasks",
    "lock": "locks",
    "unlock": "locks",
    "locks": "locks",
    "prune": "lifecycle",
    "log": "lifecycle",
    "watch": "watch",
    "prompt": "watch",
    "launch": "watch",
    "hw": "hardware",
    "status": "people",
    "doctor": "people",
    "tools": "people",
    "bridge": "people",
    "demo": "people",
    "dashboard": "dashboard",
}
GLOBAL_OPTIONS_WITH_VALUE = ("--mesh-dir",)


def _command_word(args: list[str]) -> str | None:
    """The command named on the command line, skipping global options and their values."""
    words = iter(args)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def load_commands(args: list[str] | None = None) -> None:
    """Register the commands `args` need: only the named one's module when it is known."""
    word = None if args is None or "_MESH_COMPLETE" in os.environ else _command_word(args)
    wanted = [COMMAND_MODULES[word]] if word in COMMAND_MODULES else COMMAND_MODULES.values()
    for module in dict.fromkeys(wanted):
        importlib.import_module(f"drasill_cli.cli.{module}")


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mesh (drasill-cli) {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    mesh_dir: Annotated[
        str | None,
        typer.Option(
            "--mesh-dir",
            help="Mesh directory (default: $DRASILL_MESH_DIR, the config's mesh_dir, "
            "then $XDG_DATA_HOME/drasill/mesh).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """A serverless mesh for AI coding agents on one machine."""
    del version
    ctx.obj = CliState(mesh_dir)


# Environment variables the mesh reads as text.
TEXT_VARIABLES = ("DRASILL_AGENT", "DRASILL_MESH_DIR", "DRASILL_CONFIG", "DRASILL_MESH_URL")


def _not_utf8() -> str | None:
    """What on the command line or in the environment is not valid UTF-8, if anything.

    Python hands such bytes over as lone surrogates, which no file or record could hold.
    """
    for position, arg in enumerate(sys.argv[1:], start=1):
        if _has_surrogates(arg):
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return f"argument {position} ({shown!r}) is not valid UTF-8"
    for variable in TEXT_VARIABLES:
        if _has_surrogates(os.environ.get(variable, "")):
            return f"the environment variable {variable} is not valid UTF-8"
    return None


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def main() -> None:
    """Run `mesh`; a usage error exits 2, as JSON on stdout when --json was given."""
    problem = _not_utf8()
    if problem is not None:
        message = f"{problem}; pass text in UTF-8 (put binary data in a file and attach it)"
        if "--json" in sys.argv[1:]:
            print_json({"error": {"code": "invalid-encoding", "message": message}})
        else:
            sys.stderr.write(f"error: {message}\n")
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name is shown escaped
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    load_commands(sys.argv[1:])
    try:
        code = app(standalone_mode=False, prog_name="mesh")
    except Exception as exc:
        exit_code = getattr(exc, "exit_code", None)
        format_message = getattr(exc, "format_message", None)
        if exit_code is None or format_message is None:
            raise
        message = str(format_message())
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(message + "\n")  # `mesh` or `mesh task` alone asks for help
            sys.exit(0)
        message = one_line(message)
        if "--json" in sys.argv[1:]:
            print_json({"error": {"code": "invalid-usage", "message": message}})
        else:
            sys.stderr.write(f"error: {message} (see mesh --help)\n")
        sys.exit(int(exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
