"""`mesh hooks install|uninstall|status` and the hidden `mesh hook CLI EVENT`.

The hooks themselves are core (`drasill_cli.hooks`); `mesh hook` normally never reaches this
module: the console script (`drasill_cli.cli.entry`) answers it without loading Typer. The
command here serves the same call when it comes in another shape (after other global options)
and documents it in `mesh hook --help`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from drasill_cli.cli import views
from drasill_cli.cli.common import JsonOpt, Shown, app, command, state
from drasill_cli.cli.helpstyle import examples

hooks_app = typer.Typer(
    name="hooks",
    help="Install the mesh's hooks in an agent CLI (claude, codex, gemini, copilot): mail is "
    "delivered into the agent's context, edits of files another agent holds are refused, "
    "every tool call is a heartbeat.",
    short_help="Install, remove and list the mesh's hooks in the agent CLIs.",
    epilog=examples(
        "mesh hooks install claude              # this git work tree's .claude/settings.json",
        "mesh hooks install codex --scope user  # ~/.codex/hooks.json",
        "mesh hooks install gemini --dry-run    # print the resulting file, write nothing",
        "mesh hooks status",
        "mesh hooks uninstall claude",
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(hooks_app, name="hooks")

CliArg = Annotated[
    str,
    typer.Argument(help="The agent CLI: claude, codex, gemini or copilot.", metavar="CLI"),
]
ScopeOpt = Annotated[
    str,
    typer.Option(
        "--scope",
        help="project: the settings file in the current git work tree's top (default); "
        "user: the one in your home folder.",
        metavar="SCOPE",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the resulting file; write nothing.")
]


@command(
    hooks_app,
    "install",
    short_help="Merge the mesh's hooks into a CLI's settings file.",
    epilog=examples(
        "mesh hooks install claude",
        "mesh hooks install codex --scope user",
        "mesh hooks install gemini --dry-run",
    ),
)
def install_cmd(
    ctx: typer.Context,
    cli: CliArg,
    scope: ScopeOpt = "project",
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> Shown:
    """Merge the mesh's entries (each runs `mesh hook CLI EVENT`) into the CLI's own settings
    file. Every other entry is kept; running it again changes nothing."""
    from drasill_cli.hooks import install

    del ctx
    found = install.install(cli, scope, dry_run=dry_run)
    return Shown(found, views.hooks_changed, "install")


@command(
    hooks_app,
    "uninstall",
    short_help="Remove exactly the mesh's hooks from a CLI's settings file.",
    epilog=examples("mesh hooks uninstall claude", "mesh hooks uninstall codex --scope user"),
)
def uninstall_cmd(
    ctx: typer.Context,
    cli: CliArg,
    scope: ScopeOpt = "project",
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> Shown:
    """Remove the mesh's entries from the CLI's settings file, and nothing else (the file
    itself when nothing else is left in it)."""
    from drasill_cli.hooks import install

    del ctx
    found = install.uninstall(cli, scope, dry_run=dry_run)
    return Shown(found, views.hooks_changed, "uninstall")


@command(
    hooks_app,
    "status",
    short_help="Where the mesh's hooks are installed (and, for Codex, trusted).",
    epilog=examples("mesh hooks status", "mesh hooks status --json"),
)
def status_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
    """Each CLI's settings files, project (inside a git work tree) and user: whether the
    mesh's hooks are in them, and for Codex whether they are trusted yet (`/hooks`)."""
    from drasill_cli.hooks import install

    del ctx
    return Shown(install.status(), views.hooks_status)


@command(
    app,
    "hook",
    hidden=True,
    short_help="Answer one hook call of an agent CLI (the installed hooks run it).",
    epilog=examples(
        'echo \'{"session_id": "s"}\' | mesh hook claude post-tool',
    ),
)
def hook_cmd(
    ctx: typer.Context,
    cli: Annotated[str, typer.Argument(help="claude, codex, gemini or copilot.", metavar="CLI")],
    event: Annotated[
        str,
        typer.Argument(
            help="session-start, pre-tool, post-tool, prompt, stop or session-end.",
            metavar="EVENT",
        ),
    ],
) -> None:
    """Read the CLI's JSON payload on stdin and answer in its protocol (see
    docs/howto-hooks-claude.md and the other hook how-tos). Always exit 0: a refusal is JSON on
    stdout; a failure lets the action go ahead and says why on stderr."""
    from drasill_cli.hooks.run import main as hook

    cli_state = state(ctx)
    code = hook(
        cli,
        event,
        sys.stdin,
        sys.stdout,
        sys.stderr,
        os.environ,
        mesh_dir=cli_state.mesh_dir,
        mesh_url=cli_state.mesh_url,
    )
    raise typer.Exit(code)
