"""`mesh next`: an agent's next thing to do, one at a time, in the contract's order.

1. its unread mail: the next message, consumed as `mesh inbox` consumes it (urgent first, then
   oldest; exactly once). One message per call, so that each is acted on before the next one;
   the answer says how many more are unread.
2. a review waiting on it: a task in review that it may approve or reject (not its own work)
   and that it was asked to review (the task's creator; when the creator did the task, every
   other live agent: `tasks.reviews_for`). A review is not consumed: it stays next until the
   agent approves or rejects it.
3. the next ready task, claimed (`tasks.claim_next`: one `TaskBoard.claim_next`).

Nothing of the three is an ordinary state (`NothingNext`, exit 1). `next_wait` waits for any of
them: mail for the agent, or a change of the task board, on any host (the backend's `Changes`),
keeping the agent alive meanwhile (`keepalive`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from drasill_cli.errors import OrdinaryOutcome
from drasill_cli.names import check_agent_name
from drasill_cli.waiting import check_wait

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

# Changes wake `next_wait`; this re-check only guards against a change notice that was lost.
WAIT_RECHECK_S = 5.0
KINDS = ("message", "review", "task")


class NothingNext(OrdinaryOutcome):
    """No unread mail, no review waiting and nothing to claim (an ordinary state: exit 1)."""

    default_code = "nothing-next"


def next_thing(mesh: Mesh, actor: str) -> dict[str, Any]:
    """The agent's next thing: `{"kind": "message", "message": ..., "unread": N}`,
    `{"kind": "review", "review": task}` or `{"kind": "task", "task": task}` (just claimed);
    NothingNext when there is none, saying why no task could be claimed."""
    from drasill_cli import messages, tasks

    check_agent_name(actor)
    message = messages.consume(mesh, actor)
    if message is not None:
        return {"kind": "message", "message": message, "unread": messages.unread_count(mesh, actor)}
    reviews = tasks.reviews_for(mesh, actor)
    if reviews:
        return {"kind": "review", "review": reviews[0]}
    try:
        task = tasks.claim_next(mesh, actor)
    except tasks.NothingClaimable as exc:
        why = exc.message.removeprefix("nothing to claim: ")
        raise NothingNext(_nothing(actor, why, None), why=why, **exc.details) from None
    return {"kind": "task", "task": task}


def _nothing(actor: str, why: str, waited: float | None) -> str:
    still = (
        f"still nothing to do for {actor} after {waited:g}s"
        if waited
        else (f"nothing to do for {actor}")
    )
    return (
        f"{still}: no unread mail, no review waiting, and no task to claim ({why}); "
        "wait for any of them with `mesh next --wait 600`"
    )


def next_wait(mesh: Mesh, actor: str, wait: float) -> dict[str, Any]:
    """`next_thing`, waiting up to `wait` seconds (inf: no limit) for mail to the agent or a
    change of the task board (a task added, released, requeued, a dependency completed), from
    any host; never a polling loop. The watch starts before the first look, so a change in
    between still wakes it. The agent is kept alive while it waits (`keepalive`)."""
    check_wait(wait, "until there is something to do")
    check_agent_name(actor)
    if wait == 0:
        return next_thing(mesh, actor)
    from drasill_cli.keepalive import kept_alive
    from drasill_cli.storage.changes import TASKS, inbox
    from drasill_cli.waiting import enduring

    deadline = time.monotonic() + wait
    patience = mesh.config.store.reconnect_timeout
    with kept_alive(mesh, actor), mesh.backend.changes.watch(inbox(actor), TASKS) as changes:
        while True:
            try:  # across a restart of the store's server
                return enduring(lambda: next_thing(mesh, actor), patience)
            except NothingNext as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    why = exc.details["why"]
                    raise NothingNext(_nothing(actor, why, wait), **exc.details) from None
            changes.wait(min(remaining, WAIT_RECHECK_S))
