"""`mesh task add|list|show|start|done|fail|release|approve` and `mesh claim`."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from drasill_cli.cli import complete
from drasill_cli.cli.common import (
    AsOpt,
    JsonOpt,
    app,
    command,
    note,
    print_json,
    say,
    state,
)
from drasill_cli.cli.helpstyle import examples
from drasill_cli.cli.render import ago, table
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
        help="Task id, or a unique prefix of one.",
        metavar="ID",
        autocompletion=complete.open_task_ids,
    ),
]
ResultOpt = Annotated[
    str | None,
    typer.Option("--result", help="What came of it (kept in the task's result).", metavar="TEXT"),
]


def show_task(task: dict[str, Any], verb: str, json_out: bool) -> None:
    """One task, as JSON or as a human line."""
    if json_out:
        print_json(task)
        return
    holder = f" by {task['claimed_by']}" if task.get("claimed_by") else ""
    say(f"{verb} {task['id']} [{task['state']}{holder}] {task['title']}")


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
) -> None:
    """Queue a task. Its working directory is recorded (workers such as the bridge run there)."""
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
    show_task(task, "added", json_out)


@command(
    task_app,
    "list",
    short_help="List tasks, oldest first.",
    epilog=examples("mesh task list", "mesh task list --state queued", "mesh task list --json"),
)
def list_cmd(
    ctx: typer.Context,
    state_: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only tasks in this state: queued, claimed, working, review, completed, "
            "failed or abandoned.",
            metavar="STATE",
            autocompletion=complete.task_states,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List tasks, oldest first."""
    from drasill_cli import tasks

    found = tasks.list_tasks(state(ctx).mesh(), state_)
    if json_out:
        print_json(found)
        return
    if not found:
        say("no tasks" + (f" in state {state_}" if state_ else "") + " (mesh task add TITLE)")
        return
    table(
        None,
        ["id", "state", "pri", "claimed by", "requeued", "updated", "title"],
        [
            [
                t["id"],
                t["state"],
                t["priority"],
                t["claimed_by"],
                t["attempts"] or "-",
                ago(t["updated_at"]),
                t["title"],
            ]
            for t in found
        ],
    )


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
) -> None:
    """Show one task in full."""
    from drasill_cli import tasks

    task = tasks.get_task(state(ctx).mesh(), task_id)
    if json_out:
        print_json(task)
        return
    for key in (
        "id",
        "title",
        "state",
        "priority",
        "created_by",
        "created_at",
        "claimed_by",
        "claimed_at",
        "updated_at",
        "attempts",
        "depends_on",
        "review",
        "approved_by",
        "cwd",
    ):
        value = task.get(key)
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        say(f"{key + ':':12} {'-' if value is None else value}")
    for key in ("body", "result"):
        if task.get(key):
            say(f"{key}:\n{task[key]}")


@command(
    app,
    "claim",
    short_help="Claim a task; exactly one racing claimer wins.",
    epilog=examples(
        "mesh claim --next --as alice   # the highest-priority claimable task",
        "mesh claim ID --as alice       # that task (an id or a unique prefix)",
    ),
)
def claim_cmd(
    ctx: typer.Context,
    task_id: Annotated[
        str | None,
        typer.Argument(
            help="The task to claim (id or unique prefix).",
            metavar="ID",
            autocompletion=complete.queued_task_ids,
        ),
    ] = None,
    next_: Annotated[
        bool,
        typer.Option(
            "--next",
            help="Claim the highest-priority, oldest queued task whose dependencies are "
            "completed (the default without ID).",
        ),
    ] = False,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Claim a task: of any number of racing claimers exactly one wins; the others exit 1."""
    from drasill_cli import tasks

    if task_id is not None and next_:
        raise InvalidInput("give a task ID or --next, not both", code="invalid-usage")
    cli = state(ctx)
    actor = cli.require_identity(as_)
    mesh = cli.mesh()
    task = tasks.claim_next(mesh, actor) if task_id is None else tasks.claim(mesh, actor, task_id)
    if not mesh.is_registered(actor):
        note(
            f"warning: {actor} is not registered, so its tasks are not requeued if it dies; "
            f"run `mesh register {actor}` first"
        )
    show_task(task, "claimed", json_out)


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
) -> None:
    """Mark your claimed task as being worked on."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.start(cli.mesh(), task_id, cli.require_identity(as_), result)
    show_task(task, "started", json_out)


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
) -> None:
    """Finish your task: completed, or review when it was added with --review."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.done(cli.mesh(), task_id, cli.require_identity(as_), result)
    show_task(task, "done", json_out)


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
) -> None:
    """Give up on your task for good (say why with --result); release --force requeues it."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.fail(cli.mesh(), task_id, cli.require_identity(as_), result)
    show_task(task, "failed", json_out)


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
) -> None:
    """Put your task back in the queue (only while it is still yours, unless --force)."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.release(cli.mesh(), task_id, cli.require_identity(as_), result, force=force)
    show_task(task, "released", json_out)


@command(
    task_app,
    "approve",
    short_help="Approve a task in review and complete it.",
    epilog=examples("mesh task approve ID --as reviewer"),
)
def approve_cmd(
    ctx: typer.Context,
    task_id: IdArg,
    result: ResultOpt = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Approve a task in review and complete it (not allowed to the agent that did it)."""
    from drasill_cli import tasks

    cli = state(ctx)
    task = tasks.approve(cli.mesh(), task_id, cli.require_identity(as_), result)
    show_task(task, "approved", json_out)
