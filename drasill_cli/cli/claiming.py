"""`mesh claim` and `mesh next`: taking work (top-level commands, kept apart from the `task`
group so that an agent's most frequent commands load only themselves, not the whole group)."""

from __future__ import annotations

from typing import Annotated

import typer

from drasill_cli.cli import complete, views
from drasill_cli.cli.common import AsOpt, JsonOpt, Shown, app, command, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput


@command(
    app,
    "claim",
    short_help="Claim a task; exactly one racing claimer wins.",
    epilog=examples(
        "mesh claim --next --as alice   # the highest-priority claimable task",
        "mesh claim ID --as alice       # that task (an id or a unique prefix)",
        "mesh claim --next --wait 600   # block until a task is claimable (no polling)",
    ),
)
def claim_cmd(
    ctx: typer.Context,
    task_id: Annotated[
        str | None,
        typer.Argument(
            help="The task to claim: its id (t-0007), number (7) or a unique prefix.",
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
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="With --next: block up to SECONDS until a task is claimable (a task added, "
            "released or requeued, or a dependency completed); inf: no limit. Woken by file "
            "events, not polling. Exit 1 when the time is up.",
            metavar="SECONDS",
        ),
    ] = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Claim a task: of any number of racing claimers exactly one wins; the others exit 1.

    Nothing claimable is an ordinary exit 1 (one plain line saying why); wait for work with
    --next --wait SECONDS.
    """
    from drasill_cli import tasks

    if task_id is not None and next_:
        raise InvalidInput("give a task ID or --next, not both", code="invalid-usage")
    if task_id is not None and wait is not None:
        raise InvalidInput(
            "--wait goes with --next (wait for any task to become claimable), not with an ID",
            code="invalid-usage",
        )
    cli = state(ctx)
    actor = cli.require_identity(as_)
    mesh = cli.mesh()
    if task_id is not None:
        task = tasks.claim(mesh, actor, task_id)
    elif wait is not None:
        task = tasks.claim_next_wait(mesh, actor, wait)
    else:
        task = tasks.claim_next(mesh, actor)
    return Shown(task, views.task, "claimed")


@command(
    app,
    "next",
    short_help="Your next thing to do: mail, a review, or a task claimed.",
    epilog=examples(
        "mesh next --as alice            # one message, else a review, else claim a task",
        "mesh next --wait 600 --as alice # the working loop: block until there is something",
        "mesh next --json | jq .kind     # message, review or task",
    ),
)
def next_cmd(
    ctx: typer.Context,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            help="Block up to SECONDS until there is something to do (mail, a review, a "
            "claimable task), from any host; inf: no limit. Keeps you alive and your locks "
            "held while it waits. Exit 1 when the time is up.",
            metavar="SECONDS",
        ),
    ] = None,
    as_: AsOpt = None,
    json_out: JsonOpt = False,
) -> Shown:
    """Do the next thing: read your next unread message (consumed, urgent first), else show a
    review waiting on you, else claim the next ready task.

    One message per call (run it again for the next; the answer says how many are left). A
    review stays next until you approve or reject it. Nothing to do is an ordinary exit 1;
    `mesh next --wait 600` is the loop.
    """
    from drasill_cli import agenda

    cli = state(ctx)
    actor = cli.require_identity(as_)
    mesh = cli.mesh()
    found = (
        agenda.next_wait(mesh, actor, wait) if wait is not None else agenda.next_thing(mesh, actor)
    )
    return Shown(found, views.next_thing)
