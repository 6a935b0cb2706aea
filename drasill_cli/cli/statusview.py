"""The status screen, drawn with rich: one screen that fits 80 columns (or the terminal).

Long lists are cut to a few rows with a count of the rest, so the screen stays one screen with
hundreds of agents. Used by `mesh status` (and `--watch`), `mesh demo` and `mesh reference`;
rich is imported only inside the functions that draw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drasill_cli.cli.render import ago, since, span
from drasill_cli.describe import describe_event, place

if TYPE_CHECKING:
    from rich.console import RenderableType

TASK_ORDER = (
    "working",
    "claimed",
    "review",
    "queued",
    "failed",
    "abandoned",
    "cancelled",
    "completed",
)
OPEN_TASKS = ("working", "claimed", "review", "queued")
BAR_WIDTH = 24
STATE_STYLE = {"active": "green", "idle": "yellow", "dead": "red"}


class Rows:
    """How many rows of each section to show."""

    def __init__(self, agents: int, tasks: int, locks: int, recent: int) -> None:
        self.agents = agents
        self.tasks = tasks
        self.locks = locks
        self.recent = recent


FULL = Rows(agents=20, tasks=10, locks=10, recent=8)
QUIT_HINT = "q or Ctrl-C quits · redrawn on every change"
SECTION_ORDER = ("agents", "tasks", "locks", "recent")
ELLIPSIS = "…"


# ---- the status screen -----------------------------------------------------------------------


def _gb(value: float | None) -> str:
    from drasill_cli.units import gib

    return gib(value)


def _pair(declared: float | None, measured: float | None) -> str:
    if declared is None and measured is None:
        return "-"
    return f"{_gb(declared)}/{_gb(measured)}"


def _until(timestamp: str) -> str:
    from drasill_cli import clock

    return f"in {span(clock.parse_iso(timestamp) - clock.now())}"


def shorten_middle(text: str, width: int) -> str:
    """`text` cut from the middle (head…tail) when it is wider than `width`; else unchanged."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


Cell = str | tuple[str, str]  # text, or (text, rich style)


def _shown(cell: Cell) -> Cell:
    """The cell's text as a terminal may show it (rich passes escape sequences through)."""
    from drasill_cli.cli.render import printable

    if isinstance(cell, str):
        return printable(cell, lines=False)
    return (printable(cell[0], lines=False), cell[1])


def _grid(
    columns: tuple[str, ...], rows: list[list[Cell]], width: int, free: str | None = None
) -> Any:
    """A borderless table whose rows never wrap and that fits `width`: only the `free` column
    (a title, a role, a description) is cut, with an ellipsis; ids and paths stay whole."""
    from rich.table import Table
    from rich.text import Text

    rows = [[_shown(cell) for cell in row] for row in rows]

    def plain(cell: Cell) -> str:
        return cell if isinstance(cell, str) else cell[0]

    widths = [
        max(len(name), *(len(plain(row[i])) for row in rows)) for i, name in enumerate(columns)
    ]
    if free is not None:
        index = columns.index(free)
        others = sum(widths) - widths[index] + 2 * (len(columns) - 1)
        widths[index] = max(len(free), min(widths[index], width - others))
    grid = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for name, size in zip(columns, widths, strict=True):
        grid.add_column(name, no_wrap=True, overflow="ellipsis", width=size)
    for row in rows:
        cells = []
        for cell, size in zip(row, widths, strict=True):
            text, style = (cell, "") if isinstance(cell, str) else cell
            if len(text) > size:
                text = text[: max(0, size - 1)] + ELLIPSIS
            cells.append(Text(text, style=style))
        grid.add_row(*cells)
    return grid


def _title(name: str, detail: str) -> Any:
    from rich.text import Text

    return Text.assemble((name, "bold"), f" ({detail})" if detail else "")


def _dim(text: str) -> Any:
    from rich.text import Text

    from drasill_cli.cli.render import printable

    return Text(printable(text, lines=False), style="dim", no_wrap=True, overflow="ellipsis")


def _agents_section(snap: dict[str, Any], rows: Rows, width: int) -> list[RenderableType]:
    agents = snap["agents"]
    counts = snap["counts"]["agents"]
    summary = ", ".join(f"{counts[s]} {s}" for s in ("active", "idle", "dead") if counts.get(s))
    title = _title("Agents", f"{len(agents)}{': ' + summary if summary else ''}")
    if not agents:
        return [title, _dim("  none registered (mesh register NAME)")]
    out: list[RenderableType] = [title]
    hosts = bool(snap.get("spans_hosts"))
    if rows.agents:
        cells: list[list[Cell]] = [
            [
                agent["name"],
                (agent["state"], STATE_STYLE.get(agent["state"], "")),
                *([agent.get("host") or "-"] if hosts else []),
                agent.get("role") or "-",
                agent.get("tool") or "-",
                str(agent["unread"]) if agent["unread"] else "-",
                since(agent["last_seen"]),
                _pair(agent["declared"]["ram_gb"], agent["measured"]["ram_gb"]),
                _pair(agent["declared"]["vram_gb"], agent["measured"]["vram_gb"]),
            ]
            for agent in agents[: rows.agents]
        ]
        columns = (
            "name",
            "state",
            *(("host",) if hosts else ()),
            *("role", "tool", "unread", "seen", "ram GiB", "vram GiB"),
        )
        out.append(_grid(columns, cells, width, free="role"))
    if len(agents) > rows.agents:
        out.append(_dim(f"  {len(agents) - rows.agents} more not shown (mesh agents --all)"))
    return out


def _hidden_tasks(snap: dict[str, Any], shown: int, open_count: int) -> str | None:
    """What the tasks section leaves out: more open tasks, and every finished one by state."""
    counts = snap["counts"]["tasks"]
    parts = [f"{open_count - shown} more open"] if open_count > shown else []
    parts += [f"{counts[s]} {s}" for s in TASK_ORDER if s not in OPEN_TASKS and counts.get(s)]
    if not parts:
        return None
    return f"  not shown: {', '.join(parts)} (mesh task list)"


def _tasks_section(snap: dict[str, Any], rows: Rows, width: int) -> list[RenderableType]:
    tasks = snap["tasks"]
    counts = snap["counts"]["tasks"]
    summary = " · ".join(f"{state} {counts[state]}" for state in TASK_ORDER if counts.get(state))
    title = _title("Tasks", f"{len(tasks)}{': ' + summary if summary else ''}")
    open_tasks = [t for t in tasks if t["state"] in OPEN_TASKS]
    open_tasks.sort(key=lambda t: (OPEN_TASKS.index(t["state"]), -t["priority"], t["id"]))
    out: list[RenderableType] = [title]
    if not open_tasks:
        out.append(_dim("  nothing open (mesh task add TITLE)"))
    elif rows.tasks:
        cells: list[list[Cell]] = [
            [
                task["id"],
                task["state"],
                str(task["priority"]),
                task.get("claimed_by") or "-",
                task["title"],
            ]
            for task in open_tasks[: rows.tasks]
        ]
        out.append(_grid(("id", "state", "pri", "holder", "title"), cells, width, free="title"))
    hidden = _hidden_tasks(snap, min(rows.tasks, len(open_tasks)), len(open_tasks))
    if hidden:
        out.append(_dim(hidden))
    return out


def _locks_section(snap: dict[str, Any], rows: Rows, width: int) -> list[RenderableType]:
    from drasill_cli import lockpaths

    held = snap["locks"]
    title = _title("Locks", str(len(held)))
    if not held:
        return [title, _dim("  none held")]
    out: list[RenderableType] = [title]
    if rows.locks:
        cells: list[list[Cell]] = [
            [lockpaths.shown(lock, place), lock["mode"], lock["holder"], _until(lock["expires_at"])]
            for lock in held[: rows.locks]
        ]
        columns = ("path", "mode", "holder", "expires")
        others = sum(
            max(len(c), *(len(str(r[i])) for r in cells)) + 2 for i, c in enumerate(columns) if i
        )
        room = max(12, width - others)
        for row in cells:
            row[0] = shorten_middle(str(row[0]), room)
        out.append(_grid(columns, cells, width))
    if len(held) > rows.locks:
        out.append(_dim(f"  {len(held) - rows.locks} more not shown (mesh locks)"))
    return out


def _bar(label: str, section: dict[str, Any]) -> RenderableType:
    from rich.text import Text

    limit = section["limit_gb"] or 0.0
    declared = section["declared_gb"]
    share = min(1.0, declared / limit) if limit > 0 else 0.0
    filled = round(share * BAR_WIDTH)
    style = "red" if share >= 0.9 else "yellow" if share >= 0.7 else "green"
    return Text.assemble(
        f"  {label:<4} ",
        ("█" * filled, style),
        ("░" * (BAR_WIDTH - filled), "dim"),
        f" {_gb(declared)}/{_gb(limit)} GiB declared, agents use {_gb(section['agents_gb'])},"
        f" free {_gb(section['free_gb'])}",
        no_wrap=True,
        overflow="ellipsis",
    )


def _budgets_section(snap: dict[str, Any]) -> list[RenderableType]:
    budgets = snap["budgets"]
    out: list[RenderableType] = [
        _title("Budgets", f"policy {budgets['policy']}"),
        _bar("RAM", budgets["ram"]),
    ]
    if "gpu" in budgets:
        out.append(_bar("GPU", budgets["gpu"]))
    else:
        out.append(_dim("  GPU  none found"))
    return out


def _recent_section(snap: dict[str, Any], rows: Rows, width: int) -> list[RenderableType]:
    recent = snap["recent"]
    title = _title("Recent", "")
    if not recent:
        return [title, _dim("  no activity yet")]
    if not rows.recent:
        return [title, _dim(f"  {len(recent)} events not shown (mesh log)")]
    cells: list[list[Cell]] = [
        [ago(event.get("time")), describe_event(event)] for event in recent[: rows.recent]
    ]
    grid = _grid(("when", "what"), cells, width, free="what")
    return [title, grid]


def _open_count(snap: dict[str, Any]) -> int:
    return sum(1 for t in snap["tasks"] if t["state"] in OPEN_TASKS)


def fit_rows(snap: dict[str, Any], height: int) -> Rows:
    """Rows per section so that the compact screen (no blank lines, a quit hint) fills at most
    `height` lines and every section keeps its title; rows are dealt out in turn."""
    needs = {
        "agents": len(snap["agents"]),
        "tasks": _open_count(snap),
        "locks": len(snap["locks"]),
        "recent": len(snap["recent"]),
    }
    finished = len(snap["tasks"]) > needs["tasks"]
    # Fixed: heading, quit hint, budgets (3 lines), and per list a title plus a header or a
    # "none" line.
    free = height - 2 - 3 - 2 * len(needs)
    more = {k: needs[k] > 0 and k != "recent" for k in needs}
    more["tasks"] = more["tasks"] or finished
    free -= sum(more.values())
    shown = dict.fromkeys(needs, 0)
    dealt = True
    while free > 0 and dealt:
        dealt = False
        for key in SECTION_ORDER:
            if free <= 0 or shown[key] >= needs[key]:
                continue
            shown[key] += 1
            free -= 1
            dealt = True
            if shown[key] == needs[key] and more[key] and not (key == "tasks" and finished):
                more[key] = False  # all shown: its "more" line is not needed after all
                free += 1
    return Rows(**shown)


def status_screen(
    snap: dict[str, Any], rows: Rows = FULL, *, width: int = 80, compact: bool = False
) -> RenderableType:
    """The whole status screen as one rich renderable.

    `compact` (the live screen) drops the blank lines between sections and ends with how to
    quit; `rows` then comes from `fit_rows` for the terminal's height.
    """
    from rich.console import Group
    from rich.text import Text

    from drasill_cli.cli.render import printable

    parts: list[RenderableType] = [
        Text.assemble(
            ("mesh status", "bold"),
            f"  {printable(place(snap['mesh_dir']), lines=False)}",
            no_wrap=True,
            overflow="ellipsis",
        ),
    ]
    for section in (
        _agents_section(snap, rows, width),
        _tasks_section(snap, rows, width),
        _locks_section(snap, rows, width),
        _budgets_section(snap),
        _recent_section(snap, rows, width),
    ):
        if not compact:
            parts.append(Text(""))
        parts.extend(section)
    if compact:
        parts.append(_dim(QUIT_HINT))
    return Group(*parts)
