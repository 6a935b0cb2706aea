"""`mesh lock`, `mesh unlock`, `mesh locks`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperCommand

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import AsOpt, JsonOpt, Shown, app, command, note, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput, MeshError

if TYPE_CHECKING:
    from drasill_cli.locks import Lease

COMMAND_KEY = "drasill.lock.command"


class CommandNotFound(MeshError):
    """The command after `--` does not exist: exit 127, as a shell does."""

    exit_code = 127
    default_code = "command-not-found"


class CommandNotExecutable(MeshError):
    """The command after `--` exists but cannot be run: exit 126, as a shell does."""

    exit_code = 126
    default_code = "command-not-executable"


class SplitAtDoubleDash(TyperCommand):
    """Keeps what follows `--` as the command to run, instead of more PATH arguments."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        """Cut the argument list at the first `--`."""
        if "--" in args:
            cut = args.index("--")
            ctx.meta[COMMAND_KEY] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        """Show the optional command in the usage line."""
        return [*super().collect_usage_pieces(ctx), "[-- COMMAND ARGS...]"]


PathsArg = Annotated[
    list[str],
    typer.Argument(metavar="PATH", help="Files or directories (a directory covers all under it)."),
]
HeldPathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH",
        help="Locked files or directories, as given to mesh lock.",
        autocompletion=complete.held_lock_paths,
    ),
]


@command(
    app,
    "lock",
    cls=SplitAtDoubleDash,
    short_help="Lock files or directories for an agent, all or none.",
    epilog=examples(
        "mesh lock src/auth.py --as alice             # write lock: only alice",
        "mesh lock docs/ --mode read --as bob         # shared with other readers",
        "mesh lock src/ --as alice --wait 300 -- make test   # hold while it runs",
        "Modes, leases and the full table: docs/reference/locks.md",
    ),
)
def lock_cmd(
    ctx: typer.Context,
    paths: PathsArg,
    mode: Annotated[
        str,
        typer.Option(
            help="write (only you; the default), read (shared with readers), intent (you "
            "plan to write; readers welcome) or co_write (shared with other co_writers). "
            "See docs/reference/locks.md.",
            metavar="MODE",
            autocompletion=complete.lock_modes,
        ),
    ] = "write",
    ttl: Annotated[
        float | None,
        typer.Option(
            help="Lease in seconds, at most 2592000 (30 days); default: locks.default_ttl "
            "in the config (600).",
            metavar="SECONDS",
        ),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            help="Keep retrying this many seconds before giving up (inf: until granted).",
            metavar="SECONDS",
        ),
    ] = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Lock PATHs for the agent (all or none); locking again renews.

    Lock before you edit, new files too (their path or their folder). Relative paths are fine:
    each is resolved to its absolute real path, and a folder covers everything under it.

    Lease rule: a lock holds until a whole lease (--ttl) has passed both since you took or
    renewed it and since your last mesh command (any command run as you, or `mesh heartbeat`,
    keeps all your locks). So it lasts through long work while you are alive, frees a lease
    after you fall silent, and frees at once if your process or session is gone. If a lapsed
    lock is taken, you get an urgent message saying so. Release with `mesh unlock PATH`.

    With `-- COMMAND`, runs it holding the locks (renewed while it runs), releases them after
    and exits with COMMAND's code; 127 when COMMAND is not found and 126 when it cannot be
    executed, as a shell does. Its output is the output, so --json then shapes errors only.
    Locks you held before stay held, in their mode. COMMAND gets every signal the runner gets
    and dies with the runner (docs/reference/locks.md).
    """
    from drasill_cli import locks

    run = ctx.meta.get(COMMAND_KEY)
    locks.check_options(mode, ttl, wait)
    if run is not None and not run:
        raise InvalidInput(
            "nothing after `--`: give the command to run, e.g. mesh lock F -- make test",
            code="missing-command",
        )
    cli = state(ctx)
    holder = cli.require_identity(as_)
    mesh = cli.mesh()
    from drasill_cli.keepalive import kept_alive

    # A holder waiting for its locks stays alive, and keeps the locks it holds already.
    with kept_alive(mesh, holder if wait else None):
        if run is None:
            granted = locks.acquire(mesh, paths, holder, mode=mode, ttl=ttl, wait=wait)
            return Shown(granted, views.lock_lines, "locked", then=lambda: _mention_missing(paths))
        with locks.hold(mesh, paths, holder, mode=mode, ttl=ttl, wait=wait) as lease:
            code = _run_holding(run, lease)
    raise typer.Exit(code)


def _mention_missing(paths: list[str]) -> None:
    """A lock on a path that does not exist is granted (the file may be about to be made),
    but a typo should not pass unnoticed."""
    import os

    for path in paths:
        if not os.path.lexists(path):
            note(
                f"note: {path} does not exist (yet); the lock covers it once it is created. "
                "Check the spelling if you meant an existing file."
            )


def _run_holding(argv: list[str], lease: Lease) -> int:
    """Run `argv` with the terminal's stdio while the locks are held; return its exit code.

    COMMAND never outlives the runner unlocked: it runs in a process group of its own, which
    gets every catchable signal the runner gets, and it is SIGKILLed by the kernel when the
    runner dies, however it dies (`PR_SET_PDEATHSIG`). On a terminal it runs in the foreground,
    so it reads the terminal and Ctrl-C reaches it; when it stops (Ctrl-Z) the runner stops too,
    so the shell gets the terminal back, and `fg` continues both.
    """
    from drasill_cli.cli import runner

    try:
        child = runner.start(argv)
    except FileNotFoundError as exc:
        raise CommandNotFound(
            f"command not found: {argv[0]!r} ({exc.strerror}); check the command name and PATH "
            "(the locks were released)"
        ) from exc
    except OSError as exc:
        raise CommandNotExecutable(
            f"cannot execute {argv[0]!r}: {exc.strerror}; check that it is an executable file "
            "(chmod +x) and not a folder (the locks were released)"
        ) from exc
    code = child.wait()
    for problem in lease.errors:
        note(f"warning: {problem}")
    for path in lease.lost:
        note(f"warning: the lock on {path} was lost while the command ran (forced or expired)")
    return code


@command(
    app,
    "unlock",
    short_help="Release your locks on these paths.",
    epilog=examples(
        "mesh unlock src/auth.py --as alice",
        "mesh unlock src/auth.py --as lead --force   # take another agent's lock (it is told)",
    ),
)
def unlock_cmd(
    ctx: typer.Context,
    paths: HeldPathsArg,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also take other agents' locks (each holder is told)."),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Release your locks on exactly these PATHs (all or none)."""
    from drasill_cli import locks

    cli = state(ctx)
    holder = cli.require_identity(as_)
    released = locks.release(cli.mesh(), paths, holder, force=force)
    return Shown(released, views.lock_lines, "unlocked")


@command(
    app,
    "locks",
    short_help="List locks and who holds them.",
    epilog=examples("mesh locks", "mesh locks --as alice   # marks yours", "mesh locks --json"),
)
def locks_cmd(ctx: typer.Context, as_: AsOpt = None, json_out: JsonOpt = False) -> Shown:
    """List locks; stale ones (lease ran out, holder dead) bind no one and await prune."""
    from drasill_cli import locks

    cli = state(ctx)
    me = cli.identity(as_, required=False)
    found = locks.list_locks(cli.mesh())
    return Shown(found, views.locks, me)
