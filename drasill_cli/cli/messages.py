"""`mesh send`, `inbox`, `history`: the commands agents run most, so they stay light.

Nothing heavy is imported here or in `drasill_cli.messages` (a test guards the import set);
only `inbox --wait` loads watchfiles.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import AsOpt, JsonOpt, Shown, app, command, note, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput, NegativeOutcome

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh


def _read_stdin() -> str:
    """The body from stdin, exactly as given (bytes must be UTF-8)."""
    if sys.stdin is None:
        raise InvalidInput("no message body: pass BODY or pipe it on stdin", code="empty-body")
    if sys.stdin.isatty():
        note("reading the message from stdin; end it with Ctrl-D")
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the message body on stdin is not valid UTF-8; send text (put binary data in "
            "--attach FILE)",
            code="invalid-body",
        ) from None


@command(
    app,
    "send",
    short_help="Send a message to an agent, or to all of them.",
    epilog=examples(
        'mesh send bob "tests pass on main" --as alice',
        'mesh send all "freeze: release at 17:00" --priority urgent',
        "git diff | mesh send bob --as alice --attach notes.md   # body from stdin",
        'mesh send alice "done" --reply-to ID   # ID: the one in the message header',
    ),
)
def send_cmd(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Argument(
            help="A registered agent, or `all` for every other one.",
            metavar="NAME",
            autocompletion=complete.recipients,
        ),
    ],
    body: Annotated[
        str | None,
        typer.Argument(help="The message; `-` or absent: read it from stdin.", metavar="TEXT"),
    ] = None,
    as_: AsOpt = None,
    priority: Annotated[
        str,
        typer.Option(
            help="normal or urgent (urgent mail is read first).",
            metavar="PRIORITY",
            autocompletion=complete.priorities,
        ),
    ] = "normal",
    reply_to: Annotated[
        str | None,
        typer.Option("--reply-to", help="Id of the message this answers.", metavar="ID"),
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach",
            help="A file to copy into the mesh with the message (repeat).",
            metavar="PATH",
        ),
    ] = None,
    no_wake: Annotated[
        bool, typer.Option("--no-wake", help="Deliver without waking an idle recipient.")
    ] = False,
    json_out: JsonOpt = False,
) -> Shown:
    """Send a message to an agent (or to all); the sender defaults to `human`."""
    from drasill_cli import messages

    cli = state(ctx)
    sender = cli.identity(as_, required=False) or "human"
    text = _read_stdin() if body is None or body == "-" else body
    sent = messages.send(
        cli.mesh(),
        to,
        text,
        sender=sender,
        priority=priority,
        reply_to=reply_to,
        attachments=attach or (),
        wake=not no_wake,
    )
    if to == "all" and not sent:
        raise NegativeOutcome(
            f"nothing was sent: no agent other than {sender} is registered "
            "(mesh agents lists them; mesh register NAME adds one)",
            code="no-recipients",
        )
    return Shown(sent if to == "all" else sent[0], views.sent)


@command(
    app,
    "inbox",
    short_help="Read your next message (exit 1 when there is none).",
    epilog=examples(
        "mesh inbox --as bob          # take the next message",
        "mesh inbox bob --list        # every unread message, kept",
        "mesh inbox --as bob --wait 60   # block up to a minute for mail",
        "mesh inbox --as bob --last   # the message taken last, again",
    ),
)
def inbox_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="Whose inbox (default: the identity).",
            metavar="NAME",
            autocompletion=complete.agent_names,
        ),
    ] = None,
    peek: Annotated[bool, typer.Option("--peek", help="Show the next message, keep it.")] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="Show every unread message, keep them.")
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="Block up to SECONDS for mail to arrive (inf: until some does).",
            metavar="SECONDS",
        ),
    ] = None,
    last: Annotated[
        bool,
        typer.Option(
            "--last",
            help="Show the message consumed last again (a reader killed before it showed the "
            "message loses nothing); consumes nothing.",
        ),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Read the next message (urgent first, then oldest); exit 1 when there is none.

    Taking a message and printing it are two steps: if `mesh inbox` is killed between them, the
    message is consumed but was not shown. `mesh inbox --last` shows it again.
    """
    from drasill_cli import messages

    if peek and list_:
        raise InvalidInput("--peek and --list do not go together; pick one", code="invalid-usage")
    if last and (peek or list_ or wait is not None):
        raise InvalidInput(
            "--last goes alone: it shows the message consumed last; drop --peek, --list and --wait",
            code="invalid-usage",
        )
    if wait is not None:
        from drasill_cli.waiting import check_wait

        check_wait(wait, "until mail arrives")
    cli = state(ctx)
    who = cli.whose(name, as_)
    mesh = cli.mesh()
    if last:
        message = messages.last_consumed(mesh, who)
        return Shown(message, views.last_message, who, exit_code=1 if message is None else 0)
    if not wait:  # no wait: nothing to keep alive (and nothing more to import)
        return _inbox(mesh, who, peek=peek, list_=list_, wait=wait)
    from drasill_cli.keepalive import kept_alive

    with kept_alive(mesh, who):  # a waiting agent stays alive
        return _inbox(mesh, who, peek=peek, list_=list_, wait=wait)


def _inbox(mesh: Mesh, who: str, *, peek: bool, list_: bool, wait: float | None) -> Shown:
    """The next message(s), waiting up to `wait` seconds for one (`inbox_cmd`)."""
    from drasill_cli import messages

    deadline = time.monotonic() + (wait or 0.0)
    while True:
        if wait is None:
            found = _fetch(mesh, who, peek=peek, list_=list_)
        else:  # a waiting inbox carries on across a restart of the store's server
            from drasill_cli.waiting import enduring

            patience = mesh.config.store.reconnect_timeout
            found = enduring(lambda: _fetch(mesh, who, peek=peek, list_=list_), patience)
        if found:
            break
        remaining = deadline - time.monotonic()
        if wait is None or remaining <= 0 or not messages.wait_for(mesh, who, remaining):
            # Empty: exit 1, with exactly `null` on stdout under --json.
            return Shown(None, views.empty_inbox, who, wait, exit_code=1)
    return Shown(found, views.messages)


def _fetch(mesh: Mesh, who: str, *, peek: bool, list_: bool) -> Any:
    """All unread (--list), the next one kept (--peek), or the next one taken."""
    from drasill_cli import messages

    if list_:
        return messages.list_unread(mesh, who)
    if peek:
        return messages.peek(mesh, who)
    return messages.consume(mesh, who)


@command(
    app,
    "history",
    short_help="Show messages sent and read, newest first.",
    epilog=examples(
        "mesh history --as alice",
        "mesh history bob --limit 5",
        "mesh history --sent --as alice   # what alice sent: unread, read (when) or archived",
    ),
)
def history_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="Whose history (default: the identity).",
            metavar="NAME",
            autocompletion=complete.agent_names,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N messages.", metavar="N")] = 20,
    archived: Annotated[
        bool,
        typer.Option(
            "--archived",
            help="Instead: the unread mail archived when NAME was unregistered or removed.",
        ),
    ] = False,
    sent: Annotated[
        bool,
        typer.Option(
            "--sent",
            help="Instead: the messages NAME sent, each with its state: unread, read (with "
            "read_at) or archived.",
        ),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Show messages sent and read, newest first (--archived: mail left unread at removal;
    --sent: receipts of the mail sent)."""
    from drasill_cli import messages

    if archived and sent:
        raise InvalidInput(
            "--archived and --sent do not go together; pick one", code="invalid-usage"
        )
    cli = state(ctx)
    who = cli.whose(name, as_)
    mesh = cli.mesh()
    if sent:
        return Shown(messages.receipts(mesh, who, limit), views.receipts, who)
    found = messages.archived(mesh, who, limit) if archived else messages.history(mesh, who, limit)
    return Shown(found, views.history, who, archived)
