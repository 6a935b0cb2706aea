"""The dashboard's core: what its page shows, and the actions a person takes from it.

The page shows `status.snapshot` plus the bodies of the latest messages; every action calls
the same core function as the matching CLI command (`mesh send`, `mesh task add`, `mesh task
approve`, `mesh unlock --force`), so each one is checked and audited exactly as there, under
the acting name. Nothing here knows about HTTP: `drasill_cli.web` serves it.

Actions take the JSON object the page posts and check every field's type first: wrong input is
InvalidInput (nothing written), as on the command line.
"""

from __future__ import annotations

from typing import Any

from drasill_cli import lockpaths, status
from drasill_cli.describe import describe_event
from drasill_cli.errors import InvalidInput
from drasill_cli.mesh import Mesh

LATEST_MESSAGES = 12
MESSAGE_SCAN_EVENTS = 400
BODY_PREVIEW_CHARS = 600
# What the page is sent is bounded whatever the mesh holds (docs/performance.md): task bodies
# never (the page does not show them), at most this many tasks of each state, agents and locks,
# and every other text cut to a preview.
TASKS_PER_STATE = 50
MAX_AGENTS = 200
MAX_LOCKS = 200
TITLE_CHARS = 200
TEXT_PREVIEW_CHARS = 300
DEPENDS_SHOWN = 20
WARNINGS_SHOWN = 20
HISTORY_SHOWN = 50
ATTACHMENTS_SHOWN = 20
FINISHED = ("completed", "failed", "abandoned", "cancelled")
HELD = ("claimed", "working", "review")  # a task in these states is its claimant's
TASK_KEYS = (
    "id", "title", "state", "priority", "created_by", "claimed_by", "created_at", "updated_at",
    "attempts", "review", "approved_by",
)  # fmt: skip


# ---- what the page shows ---------------------------------------------------------------------


def latest_messages(mesh: Mesh, limit: int = LATEST_MESSAGES) -> list[dict[str, Any]]:
    """The latest messages sent in the mesh, newest first, with (the start of) their bodies,
    whether they were read (by whom, when) and their attachments (names and sizes).

    Found through the audit log's `send` events (a tail read), then each message by its id
    (a few stats each): no mailbox is scanned. A message is read when the same tail holds its
    `consume` event (which always comes after its `send`).
    """
    from drasill_cli import messages

    events = status.recent_events(mesh, MESSAGE_SCAN_EVENTS)
    reads: dict[str, dict[str, Any]] = {}
    for event in events:  # newest first: the first consume of an id is its latest
        if event.get("event") == "consume" and isinstance(event.get("id"), str):
            reads.setdefault(event["id"], {"by": event.get("actor"), "at": event.get("time")})
    found: list[dict[str, Any]] = []
    for event in events:
        if event.get("event") != "send" or not isinstance(event.get("id"), str):
            continue
        try:
            message = messages.find(mesh, event["id"])
        except InvalidInput:
            continue
        body = message.get("body", "") if message else None
        read = reads.get(event["id"])
        found.append(
            {
                "id": event["id"],
                "from": event.get("actor"),
                "to": event.get("to"),
                "priority": event.get("priority", "normal"),
                "at": event.get("time"),
                "body": None if body is None else body[:BODY_PREVIEW_CHARS],
                "cut": body is not None and len(body) > BODY_PREVIEW_CHARS,
                "read": None if read is None else {"by": read["by"], "at": read["at"]},
                "attachments": _attachments(message),
            }
        )
        if len(found) >= limit:
            break
    return found


def _attachments(message: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A message's attachments as the page shows them: name and size, never a path."""
    items = (message or {}).get("attachments") or []
    return [
        {"name": _cut(item.get("name"), 120), "size": item.get("size")}
        for item in items[:ATTACHMENTS_SHOWN]
        if isinstance(item, dict)
    ]


def view(mesh: Mesh) -> dict[str, Any]:
    """Everything the page shows: the status snapshot plus the latest messages."""
    snap = status.snapshot(mesh)
    snap["messages"] = latest_messages(mesh)
    return snap


def _cut(text: Any, limit: int = TEXT_PREVIEW_CHARS) -> Any:
    """`text` cut to `limit` characters (with an ellipsis), anything else as it is."""
    if isinstance(text, str) and len(text) > limit:
        return text[:limit] + "\u2026"
    return text


def _trimmed(value: Any, depth: int = 0) -> Any:
    """A JSON value with every text cut to a preview, lists to 20 items, nesting to 4 levels."""
    if isinstance(value, str):
        return _cut(value)
    if depth >= 4 and isinstance(value, dict | list):
        return "\u2026"
    if isinstance(value, dict):
        return {str(k)[:64]: _trimmed(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, list):
        return [_trimmed(v, depth + 1) for v in value[:20]]
    return value


def task_preview(task: dict[str, Any]) -> dict[str, Any]:
    """What a task card shows: never its body; its title, result and dependencies cut short,
    and what it waits on (`waits_on`, when the core says) as it is."""
    shown = {key: task.get(key) for key in TASK_KEYS}
    shown["title"] = _cut(task.get("title"), TITLE_CHARS)
    shown["result"] = _cut(task.get("result"))
    depends = task.get("depends_on") or []
    shown["depends_on"] = list(depends[:DEPENDS_SHOWN])
    if "waits_on" in task:
        shown["waits_on"] = _trimmed(task["waits_on"])
    return shown


def shown_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks the board shows: of each open state the first `TASKS_PER_STATE` in claiming
    order (priority, then age), of each finished state the latest ones; as previews."""
    by_state: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_state.setdefault(str(task.get("state")), []).append(task)
    shown: list[dict[str, Any]] = []
    for state, group in by_state.items():
        if state in FINISHED:
            group.sort(key=lambda t: (str(t.get("updated_at") or ""), str(t["id"])), reverse=True)
        else:
            group.sort(key=lambda t: (-int(t.get("priority") or 0), str(t["id"])))
        shown += [task_preview(task) for task in group[:TASKS_PER_STATE]]
    return shown


def page_view(snap: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """What the page is sent of a `view`: what it shows and nothing more, bounded whatever the
    mesh holds (previews, the latest N, true totals in `counts`)."""
    holding: dict[str, list[dict[str, Any]]] = {}
    for task in snap["tasks"]:
        if task.get("state") in HELD and task.get("claimed_by"):
            holding.setdefault(task["claimed_by"], []).append(task)
    locks_held: dict[str, int] = {}
    for lock in snap["locks"]:
        locks_held[lock.get("holder")] = locks_held.get(lock.get("holder"), 0) + 1
    agents = []
    for agent in snap["agents"][:MAX_AGENTS]:
        shown = {key: _trimmed(value) for key, value in agent.items() if key != "cwd"}
        held = sorted(holding.get(agent["name"], []), key=lambda t: str(t.get("updated_at")))
        shown["task"] = (
            None
            if not held
            else {
                "id": held[-1]["id"],
                "title": _cut(held[-1].get("title"), TITLE_CHARS),
                "state": held[-1].get("state"),
                "others": len(held) - 1,
            }
        )
        shown["locks_held"] = locks_held.get(agent["name"], 0)
        agents.append(shown)
    return {
        "mesh_dir": snap["mesh_dir"],
        "generated_at": snap["generated_at"],
        "agents": agents,
        "tasks": shown_tasks(snap["tasks"]),
        "locks": [
            {**_trimmed(lock), "shown": _cut(lockpaths.shown(lock))}
            for lock in snap["locks"][:MAX_LOCKS]
        ],
        "budgets": snap["budgets"],
        "recent": [
            {**_trimmed(event), "what": _cut(describe_event(event))} for event in snap["recent"]
        ],
        "messages": snap["messages"],
        "counts": {**snap["counts"], "agents_total": len(snap["agents"])},
        "warnings": [_cut(w) for w in warnings[-WARNINGS_SHOWN:]],
    }


def task_detail(mesh: Mesh, task_id: str) -> dict[str, Any]:
    """A task as its detail on the page shows it: the card's fields, the start of its body,
    its result and review note, and its history (the audit log's events about it since it was
    added, the latest `HISTORY_SHOWN`, oldest first, each described as the terminal does)."""
    import collections

    from drasill_cli import audit, clock, tasks

    task = tasks.get_task(mesh, task_id)  # NotFound (404) when there is none
    detail = task_preview(task)
    detail["body"] = _cut(task.get("body") or "", BODY_PREVIEW_CHARS)
    detail["review_note"] = _cut(task.get("review_note"), BODY_PREVIEW_CHARS)
    detail["claimed_at"] = task.get("claimed_at")
    since = None
    if isinstance(task.get("created_at"), str):
        since = clock.parse_iso(task["created_at"]) - 1.0
    history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_SHOWN)
    for event in audit.read_events(mesh, since):
        if event.get("task") == task["id"]:
            history.append(
                {
                    "time": event.get("time"),
                    "event": event.get("event"),
                    "actor": event.get("actor"),
                    "note": _cut(event.get("note")),
                    "what": _cut(describe_event(event)),
                }
            )
    detail["history"] = list(history)
    return detail


def change_key(snap: dict[str, Any]) -> Any:
    """What a real change alters in a view (see `status.change_key`), messages included."""
    return (status.change_key(snap), snap["messages"], snap["budgets"])


# ---- checking what the page posts ------------------------------------------------------------


def _text(payload: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = payload.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be text, got {type(value).__name__}", code="invalid-input")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{key} is not valid Unicode text (a lone surrogate); send UTF-8 text",
            code="invalid-input",
        ) from None
    if required and not value.strip():
        raise InvalidInput(f"{key} is required; fill it in", code="invalid-input")
    return value


def _flag(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false", code="invalid-input")
    return value


def _int(payload: dict[str, Any], key: str, default: int = 0) -> int:
    value = payload.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{key} must be a whole number", code="invalid-input")
    return value


def _ids(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key) or []
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{key} must be a list of task ids", code="invalid-input")
    return value


# ---- actions ---------------------------------------------------------------------------------


def send(mesh: Mesh, actor: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """`mesh send TO BODY [--priority urgent]` as `actor`."""
    from drasill_cli import messages

    to = _text(payload, "to", required=True)
    body = _text(payload, "body", required=True)
    priority = "urgent" if _flag(payload, "urgent") else "normal"
    return messages.send(mesh, to, body, sender=actor, priority=priority)


def add_task(mesh: Mesh, actor: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`mesh task add TITLE [--body] [--priority] [--depends ...] [--review]` as `actor`.

    The task's working directory is the dashboard's (as `mesh task add` records its own).
    """
    import os

    from drasill_cli import tasks

    return tasks.add_task(
        mesh,
        _text(payload, "title", required=True),
        actor=actor,
        body=_text(payload, "body"),
        priority=_int(payload, "priority"),
        depends_on=_ids(payload, "depends"),
        review=_flag(payload, "review"),
        cwd=os.getcwd(),
    )


def approve(mesh: Mesh, actor: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`mesh task approve ID` as `actor`, with the reviewer's note."""
    return review(mesh, actor, _text(payload, "id", required=True), "approve", _note(payload))


def reject(mesh: Mesh, actor: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Reject a task in review with a note: it goes back to `working`, to its author."""
    return review(mesh, actor, _text(payload, "id", required=True), "reject", _note(payload))


def _note(payload: dict[str, Any]) -> str | None:
    return _text(payload, "note").strip() or None


def review(mesh: Mesh, actor: str, task_id: str, verdict: str, note: str | None) -> dict[str, Any]:
    """A review verdict through the core's own functions (the CLI's `task approve/reject`):
    approve completes the task, keeping the author's result, with an optional note; reject
    sends it back to its claimant with the note (required), who gets it by message."""
    from drasill_cli import tasks

    if verdict == "approve":
        return tasks.approve(mesh, task_id, actor, note=note)
    return tasks.reject(mesh, task_id, actor, note or "")


def force_unlock(mesh: Mesh, actor: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """`mesh unlock PATH --force` as `actor`; the page must say `confirm: true`."""
    from drasill_cli import locks

    path = _text(payload, "path", required=True)
    if not _flag(payload, "confirm"):
        raise InvalidInput(
            f"force-unlocking {path} takes its lock from the holder; confirm it first",
            code="unconfirmed",
        )
    return locks.release(mesh, [path], actor, force=True)


ACTIONS = {
    "send": send,
    "task": add_task,
    "approve": approve,
    "reject": reject,
    "unlock": force_unlock,
}
