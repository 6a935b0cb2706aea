"""The `mesh` entry point: global options, command loading, usage errors as JSON.

Commands live in one module per area and register themselves on import. `main` imports only
the module of the command being run (Typer inspects every registered command's signature on
each call, so loading all of them would add tens of milliseconds to every `mesh send`); help,
completion and unknown commands load them all.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer
from typer._click.exceptions import NoArgsIsHelpError  # private: no public name (pinned typer)

from drasill_cli import __version__
from drasill_cli.cli import complete
from drasill_cli.cli.common import CliState, app, one_line, print_json
from drasill_cli.errors import MeshError
from drasill_cli.names import is_utf8

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
    "claim": "claiming",
    "next": "claiming",
    "lock": "locks",
    "unlock": "locks",
    "locks": "locks",
    "prune": "lifecycle",
    "log": "lifecycle",
    "watch": "watch",
    "prompt": "watch",
    "launch": "watch",
    "hooks": "agenthooks",
    "hook": "agenthooks",
    "hw": "hardware",
    "status": "people",
    "doctor": "people",
    "tools": "people",
    "bridge": "people",
    "demo": "people",
    "dashboard": "dashboard",
    "export": "transfer",
    "import": "transfer",
}
GLOBAL_OPTIONS_WITH_VALUE = ("--mesh-dir", "--mesh-url")
GLOBAL_OPTIONS = (
    "--mesh-dir",
    "--mesh-url",
    "--version",
    "--install-completion",
    "--show-completion",
)


def _command_at(args: list[str]) -> int | None:
    """Where the command is named on the command line (skipping global options and their
    values), or None."""
    index = 0
    while index < len(args):
        word = args[index]
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            index += 2
            continue
        if not word.startswith("-"):
            return index
        index += 1
    return None


def _command_word(args: list[str]) -> str | None:
    """The command named on the command line, skipping global options and their values."""
    at = _command_at(args)
    return None if at is None else args[at]


def _completion_args() -> list[str]:
    """The words before the one being completed, on a shell-completion call (bash, zsh, fish)."""
    import shlex

    try:
        if "COMP_WORDS" in os.environ:  # bash
            words = shlex.split(os.environ["COMP_WORDS"])
            return words[1 : int(os.environ.get("COMP_CWORD", len(words)))]
        typed = os.environ.get("_TYPER_COMPLETE_ARGS", "")  # zsh and fish
        words = shlex.split(typed)
    except ValueError:  # an open quote, a bad COMP_CWORD: complete against every command
        return []
    return words[1:] if typed.endswith(" ") else words[1:-1]


@contextlib.contextmanager
def _only_subcommand(args: list[str]) -> Iterator[None]:
    """While `mesh GROUP SUB ...` runs, its group holds only SUB: Typer builds every command of
    a group (its parameters from signatures) before it runs one, about 2 ms a command, on every
    call of `mesh task ...`. The group as registered is put back afterwards (an in-process run
    leaves nothing changed); help of the group itself, completion and an unknown SUB see it
    whole."""
    at = _command_at(args)
    group = None if at is None else args[at]
    sub = None
    if at is not None and "_MESH_COMPLETE" not in os.environ:
        sub = _command_word(args[at + 1 :])
    found = next((info for info in app.registered_groups if info.name == group), None)
    typer_app = None if found is None or sub is None else found.typer_instance
    if typer_app is None:
        yield
        return
    whole = typer_app.registered_commands
    chosen = [info for info in whole if info.name == sub]
    if len(chosen) != 1:
        yield
        return
    typer_app.registered_commands = chosen
    try:
        yield
    finally:
        typer_app.registered_commands = whole


def load_commands(args: list[str] | None = None) -> None:
    """Register the commands `args` need: only the named one's module when it is known.

    On a completion call the command is taken from the words already typed, so completing
    `mesh send <TAB>` loads only the messages module (completion runs on every TAB).
    """
    if args is not None and "_MESH_COMPLETE" in os.environ:
        args = _completion_args()
    word = None if args is None else _command_word(args)
    wanted = [COMMAND_MODULES[word]] if word in COMMAND_MODULES else COMMAND_MODULES.values()
    for module in dict.fromkeys(wanted):
        importlib.import_module(f"drasill_cli.cli.{module}")
    # Help order is the modules' order, whichever were loaded first (an earlier run in the same
    # process, as the in-process test runner makes, may have loaded others already).
    order = {f"drasill_cli.cli.{name}": n for n, name in enumerate(COMMAND_MODULES.values())}
    app.registered_commands.sort(
        key=lambda info: order.get(getattr(info.callback, "__module__", ""), 0)
    )


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mesh (drasill-cli) {__version__}\n")
        raise typer.Exit(0)


def _install_completion(value: str | None) -> None:
    if value is not None:
        from drasill_cli.cli import shells

        try:
            shells.install(value)
        except MeshError as exc:
            raise shells.render_failure(exc) from None
        raise typer.Exit(0)


def _show_completion(value: str | None) -> None:
    if value is not None:
        from drasill_cli.cli import shells

        try:
            sys.stdout.write(shells.script(value) + "\n")
        except MeshError as exc:
            raise shells.render_failure(exc) from None
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    mesh_dir: Annotated[
        str | None,
        typer.Option(
            "--mesh-dir",
            help="Mesh directory (default: $DRASILL_MESH_DIR, the config's mesh_dir, "
            "then $XDG_DATA_HOME/drasill/mesh). Goes before the command.",
            metavar="DIR",
        ),
    ] = None,
    mesh_url: Annotated[
        str | None,
        typer.Option(
            "--mesh-url",
            help="PostgreSQL mesh, for agents on several machines, as a libpq URI "
            "(postgresql://user@host:5432/dbname; default: $DRASILL_MESH_URL, then the "
            "config's [store] url). Goes before the command.",
            metavar="URL",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    install_completion: Annotated[
        str | None,
        typer.Option(
            "--install-completion",
            callback=_install_completion,
            is_eager=True,
            metavar="[SHELL]",
            help="Install completion for SHELL (bash, zsh or fish; default: the current "
            "shell), then exit.",
            autocompletion=complete.shell_names,
        ),
    ] = None,
    show_completion: Annotated[
        str | None,
        typer.Option(
            "--show-completion",
            callback=_show_completion,
            is_eager=True,
            metavar="[SHELL]",
            help="Print the completion script for SHELL (default: the current shell).",
            autocompletion=complete.shell_names,
        ),
    ] = None,
) -> None:
    """A serverless mesh for AI coding agents on one machine."""
    del version, install_completion, show_completion
    if isinstance(ctx.obj, CliState):  # main's: it closes the mesh when the command ends
        ctx.obj.mesh_dir, ctx.obj.mesh_url = mesh_dir, mesh_url
    else:
        ctx.obj = CliState(mesh_dir, mesh_url)


# Environment variables the mesh reads as text.
TEXT_VARIABLES = ("DRASILL_AGENT", "DRASILL_MESH_DIR", "DRASILL_CONFIG", "DRASILL_MESH_URL")


def _not_utf8(args: list[str]) -> str | None:
    """What on the command line or in the environment is not valid UTF-8, if anything.

    Python hands such bytes over as lone surrogates, which no file or record could hold.
    """
    for position, arg in enumerate(args, start=1):
        if not is_utf8(arg):
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return f"argument {position} ({shown!r}) is not valid UTF-8"
    for variable in TEXT_VARIABLES:
        if not is_utf8(os.environ.get(variable, "")):
            return f"the environment variable {variable} is not valid UTF-8"
    return None


COMPLETION_FLAGS = ("--install-completion", "--show-completion")


def _with_shell(args: list[str]) -> list[str]:
    """`--install-completion` / `--show-completion` without a shell name: the current shell.

    An empty value stands for "the current shell" (shells.check says when there is none).
    """
    out: list[str] = []
    for index, word in enumerate(args):
        previous = args[index - 1] if index else None
        if not word.startswith("-") and previous not in (
            *COMPLETION_FLAGS,
            *GLOBAL_OPTIONS_WITH_VALUE,
        ):
            return out + args[index:]  # the command: what follows is its own
        out.append(word)
        following = args[index + 1] if index + 1 < len(args) else None
        if word in COMPLETION_FLAGS and (following is None or following.startswith("-")):
            out.append("")
    return out


def _typed_path(args: list[str]) -> str:
    """`mesh COMMAND` (or `mesh task SUBCOMMAND`) as typed, when the command is known."""
    word = _command_word(args)
    if word not in COMMAND_MODULES:
        return "mesh"
    rest = args[args.index(word) + 1 :]
    sub = next((w for w in rest if not w.startswith("-")), None) if word == "task" else None
    return " ".join(["mesh", word, *([sub] if sub else [])])


def usage_hint(exc: Exception, args: list[str]) -> str:
    """What to do about a usage error: where the option goes, or which help to read."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None and ctx.command_path else _typed_path(args)
    option = getattr(exc, "option_name", None)
    if option in GLOBAL_OPTIONS and path != "mesh":
        value = {"--mesh-dir": " DIR", "--mesh-url": " URL"}.get(option, "")
        command = path.removeprefix("mesh ")
        return (
            f"{option} is a global option and goes before the command: "
            f"mesh {option}{value} {command} ..."
        )
    if option == "--json" and path == "mesh":
        command = _command_word([a for a in args if a != "--json"]) or "COMMAND"
        return f"--json goes after the command name: mesh {command} --json"
    return f"see {path} --help"


def _refuse_undecodable_text(args: list[str]) -> None:
    """Exit 2 on an argument or variable that is not UTF-8; show odd file names escaped."""
    problem = _not_utf8(args)
    if problem is not None:
        message = f"{problem}; pass text in UTF-8 (put binary data in a file and attach it)"
        if "--json" in args:
            print_json({"error": {"code": "invalid-encoding", "message": message}})
        else:
            sys.stderr.write(f"error: {message}\n")
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> None:
    """Run `mesh` with `argv` (default: the process's arguments); it ends by raising SystemExit
    with the exit code. A usage error exits 2, as JSON on stdout when --json was given."""
    args = sys.argv[1:] if argv is None else list(argv)
    _refuse_undecodable_text(args)
    if "_MESH_COMPLETE" in os.environ:
        from drasill_cli.cli import shells

        shells.enable()
    load_commands(args)
    invocation = CliState()
    try:
        with _only_subcommand(args):
            code = app(
                args=_with_shell(args), standalone_mode=False, prog_name="mesh", obj=invocation
            )
    except Exception as exc:
        exit_code = getattr(exc, "exit_code", None)
        format_message = getattr(exc, "format_message", None)
        if exit_code is None or format_message is None:
            raise
        message = str(format_message())
        if isinstance(exc, NoArgsIsHelpError):
            sys.stdout.write(message + "\n")  # `mesh` or `mesh task` alone asks for help
            sys.exit(0)
        if getattr(exc, "option_name", None) in ("--json", *GLOBAL_OPTIONS):
            message = message.split(" (Possible options:", maxsplit=1)[
                0
            ]  # the hint says where it goes
        message = f"{one_line(message).rstrip('.')}; {usage_hint(exc, args)}"
        if "--json" in args:
            print_json({"error": {"code": "invalid-usage", "message": message}})
        else:
            sys.stderr.write(f"error: {message}\n")
        sys.exit(int(exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        invocation.close()
    sys.exit(code if isinstance(code, int) else 0)
