"""`mesh task add|list|show|cancel|edit|start|done|fail|release|approve|reject` and `mesh claim`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import AsOpt, JsonOpt, Shown, app, command, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput

task_app = typer.Typer(
    name="task",
    help="Work items that agents claim exactly once: add, list, show, and move them along.",
    short_help="Add, list, show and move tasks along.",
    epilog=examples(
        'mesh task add "fix the login test" --priority 5',
        "mesh task list --state queued",
        "mesh task start ID --as alice   # after mesh claim",
        'mesh task done ID --as alice --result "merged in abc123"',
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(task_app, name="task")

IdArg = Annotated[
    str,
    typer.Argument(
        help="Task id (t-0007), its number (7), or a unique prefix of one.",
        metavar="ID",
        autocompletion=complete.open_task_ids,
    ),
]
ResultOpt = Annotated[
    str | None,
    typer.Option("--result", help="What came of it (kept in the task's result).", metavar="TEXT"),
]


@command(
    task_app,
    "add",
    short_help="Queue a task for agents to claim.",
    epilog=examples(
        'mesh task add "fix the login test"',
        'mesh task add "ship 1.2" --priority 5 --depends ID --review',
        'mesh task add "refactor auth" --body "keep the public API; see docs/auth.md"',
    ),
)
def add_cmd(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="One line saying what to do.", metavar="TITLE")],
    body: Annotated[
        str, typer.Option("--body", help="Details, instructions, context.", metavar="TEXT")
    ] = "",
    priority: Annotated[
        int, typer.Option("--priority", help="Larger is claimed first (default 0).", metavar="N")
    ] = 0,
    depends: Annotated[
        list[str] | None,
        typer.Option(
            "--depends",
            help="A task that must be completed before this one can be claimed (repeatable).",
            metavar="ID",
            autocompletion=complete.task_ids,
        ),
    ] = None,
    review: Annotated[
        bool,
        typer.Option("--review", help="`done` sends it to review; another agent approves it."),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Queue a task. Its working directory is recorded (workers such as the bridge run there):
    the top of the git work tree when run inside one."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.add_task(
        cli.mesh(),
        title,
        actor=cli.identity(as_, required=False),
        body=body,
        priority=priority,
        depends_on=depends or [],
        review=review,
        cwd=os.getcwd(),
    )
    return Shown(task, views.task, "added")


@command(
    task_app,
    "list",
    short_help="List tasks, oldest first, with what each waits on.",
    epilog=examples(
        "mesh task list",
        "mesh task list --ready            # what `mesh claim --next` could take",
        "mesh task list --mine --as alice  # the tasks alice created or claimed",
        "mesh task list --state queued --json",
    ),
)
def list_cmd(
    ctx: typer.Context,
    state_: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only tasks in this state: queued, claimed, working, review, completed, "
            "failed, abandoned or cancelled.",
            metavar="STATE",
            autocompletion=complete.task_states,
        ),
    ] = None,
    ready: Annotated[
        bool,
        typer.Option(
            "--ready",
            help="Only queued tasks whose dependencies are all completed (claimable now).",
        ),
    ] = False,
    mine: Annotated[
        bool,
        typer.Option(
            "--mine",
            help="Only your tasks: those you created or claimed (--as NAME or DRASILL_AGENT).",
        ),
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="On a terminal, show every title whole (never cut).")
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """List tasks, oldest first. A queued task shows what it waits on (the dependencies not
    completed, with their states; JSON `waits_on`), and a task whose dependency failed, was
    abandoned or cancelled is blocked for good (JSON `blocked`).

    Piped, each task is one line (grep finds it by its id); on a terminal long titles are cut
    with an ellipsis to fit, unless --wide.
    """
    from drasill_cli import tasks

    cli = state(ctx)
    who = cli.require_identity(as_) if mine else None
    found = tasks.list_tasks(cli.mesh(), state_, ready=ready, mine=who)
    return Shown(found, views.tasks, state_, ready, wide)


@command(
    task_app,
    "show",
    short_help="Show one task in full.",
    epilog=examples("mesh task show ID", "mesh task show ID --json"),
)
def show_cmd(
    ctx: typer.Context,
    task_id: Annotated[
        str,
        typer.Argument(
            help="Task id, or a unique prefix of one.",
            metavar="ID",
            autocompletion=complete.task_ids,
        ),
    ],
    json_out: JsonOpt = False,
) -> Shown:
    """Show one task in full."""
    from drasill_cli import tasks

    task = tasks.get_task(state(ctx).mesh(), task_id)
    return Shown(task, views.task_in_full)


@command(
    task_app,
    "cancel",
    short_help="Cancel a task for good (its creator, or --force).",
    epilog=examples(
        'mesh task cancel ID --note "not needed after all" --as lead',
        "mesh task cancel ID --force --as lead   # a task someone else created",
    ),
)
def cancel_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    note_: Annotated[
        str | None,
        typer.Option(
            "--note",
            help="Why (kept in the audit log and, if it has none, the task's result).",
            metavar="TEXT",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Cancel it even though you did not create it."),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Cancel a task: state cancelled, which is final. Only its creator may, unless --force.

    A task that is completed or cancelled already cannot be; a claimant holding it is told by
    message. Tasks that depend on it are blocked for good (`mesh task edit` can drop the
    dependency while they are queued).
    """
    from drasill_cli import tasks

    cli = state(ctx)
    actor = cli.identity(as_, required=not force)
    task = tasks.cancel(cli.mesh(), task_id, actor, note_, force=force)
    return Shown(task, views.task, "cancelled")


@command(
    task_app,
    "edit",
    short_help="Change a queued task's title, body, priority, dependencies or review.",
    epilog=examples(
        'mesh task edit ID --title "fix the login test on CI"',
        "mesh task edit ID --priority 9 --depends t-0003 --depends t-0004",
        "mesh task edit ID --no-depends --no-review",
    ),
)
def edit_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    title: Annotated[
        str | None, typer.Option("--title", help="A new title (one line).", metavar="TEXT")
    ] = None,
    body: Annotated[str | None, typer.Option("--body", help="A new body.", metavar="TEXT")] = None,
    priority: Annotated[
        int | None,
        typer.Option("--priority", help="A new priority (larger is claimed first).", metavar="N"),
    ] = None,
    depends: Annotated[
        list[str] | None,
        typer.Option(
            "--depends",
            help="Its dependencies, replacing the ones it has (repeatable).",
            metavar="ID",
            autocompletion=complete.task_ids,
        ),
    ] = None,
    no_depends: Annotated[
        bool, typer.Option("--no-depends", help="Drop every dependency it has.")
    ] = False,
    review: Annotated[
        bool | None,
        typer.Option(
            "--review/--no-review", help="Whether `done` sends it to review.", show_default=False
        ),
    ] = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Change a queued task (only while queued: once claimed, its claimant works on what it
    read). Invalid input changes nothing (exit 2); a task in another state is exit 1."""
    from drasill_cli import tasks

    if depends and no_depends:
        raise InvalidInput("give --depends ID or --no-depends, not both", code="invalid-usage")
    cli = state(ctx)
    task = tasks.edit(
        cli.mesh(),
        task_id,
        cli.identity(as_, required=False),
        title=title,
        body=body,
        priority=priority,
        depends_on=[] if no_depends else depends,
        review=review,
    )
    return Shown(task, views.task, "edited")


@command(
    task_app,
    "start",
    short_help="Mark your claimed task as being worked on.",
    epilog=examples("mesh task start ID --as alice"),
)
def start_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    result: ResultOpt = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Mark your claimed task as being worked on."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.start(cli.mesh(), task_id, cli.require_identity(as_), result)
    return Shown(task, views.task, "started")


@command(
    task_app,
    "done",
    short_help="Finish your task (to review if it needs one).",
    epilog=examples('mesh task done ID --as alice --result "fixed in abc123"'),
)
def done_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    result: ResultOpt = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Finish your task: completed, or review when it was added with --review.

    A task entering review is announced by message to its creator (or, when you created it, to
    every other live agent); the reviewer approves or rejects it.
    """
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.done(cli.mesh(), task_id, cli.require_identity(as_), result)
    return Shown(task, views.task, "done")


@command(
    task_app,
    "fail",
    short_help="Give up on your task for good.",
    epilog=examples('mesh task fail ID --as alice --result "needs a GPU this host lacks"'),
)
def fail_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    result: ResultOpt = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Give up on your task for good (say why with --result); release --force requeues it."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.fail(cli.mesh(), task_id, cli.require_identity(as_), result)
    return Shown(task, views.task, "failed")


@command(
    task_app,
    "release",
    short_help="Put your task back in the queue.",
    epilog=examples(
        "mesh task release ID --as alice",
        "mesh task release ID --as lead --force   # take it back from anyone, or retry it",
    ),
)
def release_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    result: ResultOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Requeue it whoever holds it: takes a claimed, working or review task back "
            "from its claimant, or gives a failed or abandoned task another run.",
        ),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Put your task back in the queue (only while it is still yours, unless --force)."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.release(cli.mesh(), task_id, cli.require_identity(as_), result, force=force)
    return Shown(task, views.task, "released")


NoteOpt = Annotated[
    str | None,
    typer.Option(
        "--note",
        help="The reviewer's words (kept in review_note, sent to the author).",
        metavar="TEXT",
    ),
]


@command(
    task_app,
    "approve",
    short_help="Approve a task in review and complete it.",
    epilog=examples(
        "mesh task approve ID --as reviewer", 'mesh task approve 7 --note "clean" --as reviewer'
    ),
)
def approve_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    note_: NoteOpt = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Approve a task in review: it is completed (not allowed to the agent that did it).

    The author's result is kept; --note goes to review_note and the author is told.
    """
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.approve(cli.mesh(), task_id, cli.require_identity(as_), note_)
    return Shown(task, views.task, "approved")


@command(
    task_app,
    "reject",
    short_help="Send a task in review back to its author with a note.",
    epilog=examples('mesh task reject ID --note "the tests do not cover X" --as reviewer'),
)
def reject_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    note_: Annotated[
        str,
        typer.Option(
            "--note",
            help="What to fix (required; kept in review_note, sent to the author).",
            metavar="TEXT",
        ),
    ],
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Send a task in review back to its author: it returns to working with the same claimant,
    who gets the note by message (not allowed to the agent that did it)."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.reject(cli.mesh(), task_id, cli.require_identity(as_), note_)
    return Shown(task, views.task, "rejected")
