"""The `mesh` entry point: global options, command registration, usage errors as JSON."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from drasill_cli import __version__
from drasill_cli.cli import agents as _agents  # noqa: F401 -- registers its commands
from drasill_cli.cli import hardware as _hardware  # noqa: F401 -- registers its commands
from drasill_cli.cli import lifecycle as _lifecycle  # noqa: F401 -- registers its commands
from drasill_cli.cli import locks as _locks  # noqa: F401 -- registers its commands
from drasill_cli.cli import messages as _messages  # noqa: F401 -- registers its commands
from drasill_cli.cli import people as _people  # noqa: F401 -- registers its commands
from drasill_cli.cli import tasks as _tasks  # noqa: F401 -- registers its commands
from drasill_cli.cli import watch as _watch  # noqa: F401 -- registers its commands
from drasill_cli.cli.common import CliState, app, print_json


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


def main() -> None:
    """Run `mesh`; a usage error exits 2, as JSON on stdout when --json was given."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        exit_code = getattr(exc, "exit_code", None)
        format_message = getattr(exc, "format_message", None)
        if exit_code is None or format_message is None:
            raise
        message = str(format_message())
        if "--json" in sys.argv[1:]:
            print_json({"error": {"code": "invalid-usage", "message": message}})
        else:
            sys.stderr.write(f"error: {message} (see mesh --help)\n")
        sys.exit(int(exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
