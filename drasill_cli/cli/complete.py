"""Shell completion of live values: agent names, task ids, held locks, modes, tools, states.

These run on every TAB press, so they stay light: a read-only view of the mesh through its
storage interfaces (which never follow a link, never block on a FIFO and never write: a
damaged entry is only reported; a database is opened read-only and never migrated),
never pydantic or rich (benchmarks/bench_complete.py measures a call against `mesh --version`).
They never write, never create a mesh and never fail: a mesh that is missing, unreadable or
damaged completes nothing. Each function takes Typer's completion
arguments (the context and the word typed so far) and returns (value, help) pairs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

MAX_ITEMS = 200
TASK_STATES = (
    "queued",
    "claimed",
    "working",
    "review",
    "completed",
    "failed",
    "abandoned",
    "cancelled",
)
OPEN_STATES = ("queued", "claimed", "working", "review")
LOCK_MODES = (
    ("write", "only you (the default)"),
    ("read", "you and other readers; no writer"),
    ("intent", "you plan to write; readers still welcome"),
    ("co_write", "shared writing with other co_write holders"),
)
PRIORITIES = (("normal", "read in order"), ("urgent", "read before normal mail"))
SUPERVISORS = (("heimdall", "heimdall's socket protocol"), ("tmux", "a tmux pane"))

Items = list[tuple[str, str]]
T = TypeVar("T")


def _mesh(ctx: Any) -> Mesh | None:
    """A read-only view of the mesh the command line names (global --mesh-dir/--mesh-url
    first); None when there is none yet or it cannot be read."""
    try:
        from drasill_cli.mesh import Mesh

        params = ctx.find_root().params if ctx is not None else {}
        mesh = Mesh.open(params.get("mesh_dir"), mesh_url=params.get("mesh_url"), read_only=True)
        return mesh if mesh.backend.exists() else None
    except Exception:  # noqa: BLE001 -- completion must never fail; a bad mesh completes nothing
        return None


def _listed(read: Callable[[], list[T]]) -> list[T]:
    """What `read` lists, or nothing when the mesh cannot be read."""
    try:
        return read()
    except Exception:  # noqa: BLE001 -- completion must never fail: list nothing
        return []


def _about(mesh: Mesh, name: str) -> str:
    """An agent's role and tool, for the help text ("agent" when it has neither)."""
    try:
        agent = mesh.backend.presence.get(name)
    except Exception:  # noqa: BLE001 -- completion must never fail: describe it plainly
        agent = None
    about = " ".join(v for v in (agent.role, agent.tool) if v) if agent is not None else ""
    return about or "agent"


def _matching(items: Items, incomplete: str) -> Items:
    return [(value, text) for value, text in items if value.startswith(incomplete)][:MAX_ITEMS]


def agent_names(ctx: Any, incomplete: str) -> Items:
    """Registered agents, with their role and tool as the help text."""
    mesh = _mesh(ctx)
    if mesh is None:
        return []
    names = [n for n in _listed(mesh.backend.presence.names) if n.startswith(incomplete)]
    return [(name, _about(mesh, name)) for name in names[:MAX_ITEMS]]


def recipients(ctx: Any, incomplete: str) -> Items:
    """Agents, and `all` (every registered agent but the sender)."""
    return _matching([("all", "every other registered agent")], incomplete) + agent_names(
        ctx, incomplete
    )


def _tasks(ctx: Any, incomplete: str, states: tuple[str, ...]) -> Items:
    mesh = _mesh(ctx)
    if mesh is None:
        return []
    found = [
        (task.id, f"{task.state}: {task.title[:60]}")
        for task in _listed(mesh.backend.board.all)
        if task.id.startswith(incomplete) and task.state in states
    ]
    return sorted(found, reverse=True)[:MAX_ITEMS]  # newest first: ids sort by creation


def open_task_ids(ctx: Any, incomplete: str) -> Items:
    """Ids of tasks not yet finished (queued, claimed, working, review), newest first."""
    return _tasks(ctx, incomplete, OPEN_STATES)


def queued_task_ids(ctx: Any, incomplete: str) -> Items:
    """Ids of queued tasks (what `mesh claim` can take)."""
    return _tasks(ctx, incomplete, ("queued",))


def task_ids(ctx: Any, incomplete: str) -> Items:
    """Ids of every task, newest first."""
    return _tasks(ctx, incomplete, TASK_STATES)


def _identity(ctx: Any) -> str | None:
    """The agent the command line acts as: `--as NAME`, else $DRASILL_AGENT."""
    given = ctx.params.get("as_") if ctx is not None else None
    return given or os.environ.get("DRASILL_AGENT") or None


def _shown_path(path: str) -> str:
    """A lock path as the user would type it: relative to here when under here."""
    here = os.getcwd()
    if path == here:
        return "."
    return os.path.relpath(path, here) if here != "/" and path.startswith(here + "/") else path


def held_lock_paths(ctx: Any, incomplete: str) -> Items:
    """Paths of the locks the acting agent holds (all locks when there is no identity)."""
    mesh = _mesh(ctx)
    if mesh is None:
        return []
    from drasill_cli import lockpaths
    from drasill_cli.liveness import hostname

    me = _identity(ctx)
    found: Items = []
    for record in _listed(mesh.backend.locks.all):
        if not isinstance(record.get("path"), str):
            continue
        if me is not None and record.get("holder") != me:
            continue
        about = f"{record.get('mode')} lock of {record.get('holder')}"
        forms = [_shown_path(record["path"])]  # a path, or a repository key: unlock takes both
        where = lockpaths.local(record) if lockpaths.split_key(record["path"]) else None
        if where is not None and where[0] == hostname():
            forms.append(_shown_path(where[1]))  # the path as it was locked here
        found += [(form, about) for form in forms if form.startswith(incomplete)]
    return sorted(set(found))[:MAX_ITEMS]


def lock_modes(ctx: Any, incomplete: str) -> Items:
    """The four lock modes."""
    del ctx
    return _matching(list(LOCK_MODES), incomplete)


def task_states(ctx: Any, incomplete: str) -> Items:
    """The seven task states."""
    del ctx
    return _matching([(state, "tasks in this state") for state in TASK_STATES], incomplete)


def priorities(ctx: Any, incomplete: str) -> Items:
    """normal and urgent."""
    del ctx
    return _matching(list(PRIORITIES), incomplete)


def supervisors(ctx: Any, incomplete: str) -> Items:
    """heimdall and tmux."""
    del ctx
    return _matching(list(SUPERVISORS), incomplete)


def shell_names(ctx: Any, incomplete: str) -> Items:
    """bash, zsh and fish."""
    del ctx
    return _matching([(shell, "") for shell in ("bash", "zsh", "fish")], incomplete)


def tool_names(ctx: Any, incomplete: str) -> Items:
    """The AI CLIs mesh knows: the built-ins and the config file's [tools.NAME] tables."""
    del ctx
    try:
        from drasill_cli import tools
        from drasill_cli.config import load_config

        known = tools.profiles(load_config())
    except Exception:  # noqa: BLE001 -- completion must never fail; a bad config completes nothing
        return []
    items = [(name, known[name].note or " ".join(known[name].command)) for name in sorted(known)]
    return _matching(items, incomplete)
