"""What every command shares: the Typer app, common options, error rendering, output.

Exit codes come from the core's error classes and are applied here, in one place.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from drasill_cli.cli import complete, helpstyle, lightparams
from drasill_cli.cli.render import printable
from drasill_cli.errors import InvalidInput, MeshError, OrdinaryOutcome
from drasill_cli.names import is_utf8

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

lightparams.install()
helpstyle.install()

app = typer.Typer(
    name="mesh",
    help="A serverless mesh for AI coding agents: messages, task claims, file locks, wake-ups "
    "and RAM/GPU budgets, kept in one shared directory or one PostgreSQL database.",
    epilog=helpstyle.examples(
        "mesh demo                          # see it work on a throwaway mesh",
        "mesh register alice --role lead    # join as alice",
        'mesh send bob "hello" --as alice',
        "mesh status",
        "mesh COMMAND --help                # every command's options and examples",
    ),
    no_args_is_help=True,
    add_completion=False,  # app.py declares --install-completion [SHELL] itself
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON value on stdout (errors too).")
]
# The budget and role an agent declares, alike for `mesh register` and `mesh launch`.
RoleOpt = Annotated[str | None, typer.Option(help="Free-form role, e.g. reviewer.", metavar="TEXT")]
RamGbOpt = Annotated[
    float | None, typer.Option(help="RAM budget to reserve, in GiB.", metavar="GIB")
]
VramGbOpt = Annotated[
    float | None, typer.Option(help="GPU memory to reserve, in GiB.", metavar="GIB")
]
AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this agent (default: $DRASILL_AGENT); counts as its heartbeat.",
        metavar="NAME",
        autocompletion=complete.agent_names,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


class CliState:
    """Per-invocation state: the global options and the lazily opened mesh."""

    def __init__(self, mesh_dir: str | None = None, mesh_url: str | None = None) -> None:
        self.mesh_dir = mesh_dir
        self.mesh_url = mesh_url
        self._mesh: Mesh | None = None
        self.actor: str | None = None

    def mesh(self) -> Mesh:
        """Open the mesh on first use (so `--help` never touches the disk)."""
        if self._mesh is None:
            from drasill_cli.mesh import Mesh

            self._mesh = Mesh.open(self.mesh_dir, mesh_url=self.mesh_url)
        return self._mesh

    def identity(self, as_name: str | None, *, required: bool = True) -> str | None:
        """The acting agent (`--as` > $DRASILL_AGENT), validated.

        Its heartbeat is refreshed when the command ends, unless the command was refused as
        invalid (exit 2) or the mesh was unusable (exit 4): then nothing is written.
        """
        from drasill_cli.names import check_agent_name

        name = as_name if as_name is not None else os.environ.get("DRASILL_AGENT") or None
        if name is None:
            if required:
                raise InvalidInput(
                    "no identity: pass --as NAME or set DRASILL_AGENT", code="missing-identity"
                )
            return None
        check_agent_name(name)
        self.actor = name
        return name

    def require_identity(self, as_name: str | None) -> str:
        """The acting agent, which the command cannot do without (see `identity`)."""
        name = self.identity(as_name)
        assert name is not None  # noqa: S101 -- identity(required=True) never returns None
        return name

    def whose(self, name: str | None, as_name: str | None) -> str:
        """The agent NAME, or else the acting agent (then required).

        The acting agent is still validated and heartbeated when NAME is given.
        """
        identity = self.identity(as_name, required=name is None)
        who = name if name is not None else identity
        assert who is not None  # noqa: S101 -- identity(required=True) never returns None
        return who

    def beat(self) -> None:
        """Count the finished command as the acting agent's heartbeat (best effort)."""
        if self.actor is None or self._mesh is None:
            return
        try:
            self._mesh.touch_heartbeat(self.actor)
        except (MeshError, OSError) as exc:
            self._mesh.warnings.append(f"could not record the heartbeat of {self.actor}: {exc}")

    def close(self) -> None:
        """Release the mesh's connections, if it was opened (the command has ended)."""
        if self._mesh is not None:
            mesh, self._mesh = self._mesh, None
            mesh.backend.close()

    def flush_warnings(self) -> None:
        """Report what the core handled on the way (quarantined files) on stderr."""
        if self._mesh is not None:
            for warning in self._mesh.warnings:
                sys.stderr.write(f"warning: {printable(warning)}\n")
            self._mesh.warnings.clear()


def state(ctx: typer.Context) -> CliState:
    """The invocation's CliState (set up by the app callback)."""
    found = ctx.find_object(CliState)
    if found is None:
        found = CliState()
        ctx.obj = found
    return found


def print_json(value: Any) -> None:
    """Write one JSON value (one line) to stdout."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    if not is_utf8(text):  # a file name that is not UTF-8: escaped, so stdout stays UTF-8
        text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    sys.stdout.write(text + "\n")


class Shown:
    """A command's result: `value` (what --json prints) and how people see it.

    A command returns one; the `command` decorator renders it, the one place that chooses
    between JSON and the human view (`views.py` holds the views). `view(value, *args)` prints
    the human form; `exit_code` ends the command after the output (exit 1: an ordinary negative
    outcome whose output is still the answer, such as an empty inbox's `null`); `then` runs
    after the output in both modes (a note on stderr).
    """

    __slots__ = ("args", "exit_code", "then", "value", "view")

    def __init__(
        self,
        value: Any,
        view: Callable[..., None],
        *args: Any,
        exit_code: int = 0,
        then: Callable[[], None] | None = None,
    ) -> None:
        self.value = value
        self.view = view
        self.args = args
        self.exit_code = exit_code
        self.then = then

    def render(self, json_out: bool) -> None:
        """Print the value as one JSON value, or its human view; then `then`."""
        if json_out:
            print_json(self.value)
        else:
            self.view(self.value, *self.args)
        if self.then is not None:
            self.then()


def emit(shown: Shown, json_out: bool) -> None:
    """Render one result of a streaming command (an event, a snapshot), as the decorator
    renders a command's result."""
    shown.render(json_out)


def say(text: str) -> None:
    """Human-facing text on stdout (only when --json is off), control characters spelled out."""
    sys.stdout.write(printable(text) + "\n")


def note(text: str) -> None:
    """Progress and hints for humans: always stderr, control characters spelled out."""
    sys.stderr.write(printable(text) + "\n")


def render_error(exc: MeshError, json_out: bool) -> None:
    """The contract's error form: a JSON object on stdout, or one `error:` line on stderr.

    An ordinary state (nothing to claim, a wait that ran out) is one plain line instead.
    """
    if json_out:
        print_json(exc.to_json())
    else:
        prefix = "" if isinstance(exc, OrdinaryOutcome) else "error: "
        sys.stderr.write(f"{prefix}{one_line(exc.message)}\n")


def one_line(text: str) -> str:
    """Escape line breaks and control characters so an error stays one line."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode()
        for char in text
    )


def _unhandled_io(exc: OSError) -> MeshError:
    """A file operation the core did not expect to fail: still one line and exit 4, never a
    traceback (the store maps its own failures; this covers everything else)."""
    from drasill_cli.errors import io_error

    return io_error("use", exc.filename or "the mesh directory", exc)


def _reader_gone() -> None:
    """The reader of stdout went away (`| head` that had enough): the rest is not wanted. Point
    stdout at the null device so nothing more written, nor the flush at exit, fails."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):  # stdout without a descriptor (captured)
        pass


def _own_status(result: object) -> None:
    """End with the exit status a `Shown` result carries (0: return normally)."""
    if isinstance(result, Shown) and result.exit_code:
        raise typer.Exit(result.exit_code)


def _flush_stdout() -> None:
    """Flush stdout, where a closed pipe shows; a closed pipe ends the output quietly."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_gone()


def command(target: typer.Typer, name: str | None = None, **options: Any) -> Callable[[F], F]:
    """Register a command whose MeshErrors become the contract's output and exit code.

    The command must take `ctx: typer.Context` and, where it has one, `json_out`. What it
    returns is rendered here: a `Shown` as JSON under --json or else as its human view (a
    command that streams its output renders each item with `emit` and returns None).
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx: typer.Context = kwargs["ctx"]
            cli = state(ctx)
            result = None
            try:
                try:
                    result = func(*args, **kwargs)
                    if isinstance(result, Shown):
                        result.render(bool(kwargs.get("json_out")))
                    sys.stdout.flush()  # a reader gone (`| head`) shows here, not at exit
                except BrokenPipeError:  # output cut short by its reader: not a mesh problem
                    _reader_gone()
                except OSError as exc:
                    raise _unhandled_io(exc) from exc
                _own_status(result)  # the command's own exit status, pipe closed or not
            except MeshError as exc:
                if exc.exit_code in (1, 3):
                    cli.beat()
                render_error(exc, bool(kwargs.get("json_out")))
                raise typer.Exit(exc.exit_code) from None
            except typer.Exit:
                cli.beat()
                raise
            finally:
                _flush_stdout()
                cli.flush_warnings()
            cli.beat()
            cli.flush_warnings()
            return None if isinstance(result, Shown) else result

        target.command(name, **options)(wrapper)
        return func

    return decorate
