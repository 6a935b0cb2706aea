"""The dashboard's first view, rendered on the server: the page's HTML already holds the mesh's
current state (agents, the task board, locks, budgets, messages, the audit log), so nothing is
blank before the live feed's first event; the page's script then keeps it current with the
same markup (drasill_cli/web/static/app.js renders each section alike).

Every value from the mesh goes through `html.escape` (text and attribute values alike); the
page stays free of inline scripts and styles, as its Content-Security-Policy demands (a bar's
width is a `data-share` the script applies; until then the bar shows its width as a class in
10% steps from the stylesheet).
"""

from __future__ import annotations

import html
import re
from typing import Any

from drasill_cli import clock, units

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
FINISHED = ("completed", "failed", "abandoned", "cancelled")
HELD = ("claimed", "working", "review")
BLOCKING = ("failed", "abandoned", "cancelled")  # a dependency in these never completes
AGENT_COLUMNS = 9


def esc(value: Any) -> str:
    """`value` as HTML text (or an attribute value): every markup character escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def tag(name: str, attrs: dict[str, Any] | None = None, *children: str) -> str:
    """An element: attributes escaped (None and False left out), children already HTML."""
    parts = [name]
    for key, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        parts.append(key if value is True else f'{key}="{esc(value)}"')
    return f"<{' '.join(parts)}>{''.join(children)}</{name}>"


def text(name: str, attrs: dict[str, Any] | None, value: Any) -> str:
    """An element holding `value` as text."""
    return tag(name, attrs, esc(value))


def ago(iso: Any, now: float) -> str:
    """How long ago `iso` was, as the page says it ("12s ago")."""
    if not isinstance(iso, str) or not iso:
        return "-"
    try:
        seconds = max(0.0, now - clock.parse_iso(iso))
    except ValueError:
        return "-"
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def until(iso: Any, now: float) -> str:
    """When `iso` comes, as the page says it ("in 5m", "expired")."""
    try:
        seconds = clock.parse_iso(str(iso)) - now
    except ValueError:
        return "-"
    if seconds <= 0:
        return "expired"
    if seconds < 60:
        return f"in {-int(-seconds // 1)}s"
    if seconds < 3600:
        return f"in {-int(-seconds // 60)}m"
    return f"in {seconds / 3600:.1f}h"


def gib(value: Any) -> str:
    """A size in GiB as the terminal shows it (`units.gib`: two decimals at most), "-" when
    unknown."""
    return (
        units.gib(value) if isinstance(value, int | float) and not isinstance(value, bool) else "-"
    )


def pair(declared: Any, measured: Any) -> str:
    """`declared / measured` GiB."""
    if declared is None and measured is None:
        return "-"
    return f"{gib(declared)} / {gib(measured)}"


def search_text(*parts: Any) -> str:
    """What the search box matches an item by: its words, lower case."""
    return " ".join(str(p) for p in parts if p not in (None, "")).lower()


# ---- sections ----------------------------------------------------------------------------


def agents_count(view: dict[str, Any]) -> str:
    counts = view.get("counts") or {}
    total = counts.get("agents_total", len(view["agents"]))
    states = ", ".join(f"{n} {s}" for s, n in (counts.get("agents") or {}).items())
    more = f"; {len(view['agents'])} shown" if total > len(view["agents"]) else ""
    return f"({total}{': ' + states if total else ''}{more})"


def current_task(agent: dict[str, Any]) -> str:
    task = agent.get("task")
    if not task:
        return text("span", {"class": "dim"}, "-")
    others = f" +{task['others']}" if task.get("others") else ""
    return tag(
        "a",
        {"class": "task-link", "href": "#", "data-id": task["id"]},
        text("span", {"class": f"badge {task.get('state')}"}, task.get("state")),
        " ",
        esc(f"{task['id']} {task.get('title') or ''}{others}"),
    )


def agent_rows(view: dict[str, Any], now: float) -> str:
    rows = []
    for a in view["agents"]:
        about = " · ".join(str(x) for x in (a.get("role"), a.get("tool")) if x)
        declared, measured = a.get("declared") or {}, a.get("measured") or {}
        task = a.get("task") or {}
        rows.append(
            tag(
                "tr",
                {
                    "data-name": a["name"],
                    "data-state": a.get("state"),
                    "data-search": search_text(
                        a["name"],
                        a.get("state"),
                        a.get("host"),
                        about,
                        task.get("id"),
                        task.get("title"),
                    ),
                },
                tag(
                    "td",
                    {"class": "name"},
                    text("b", None, a["name"]),
                    text("div", {"class": "dim small"}, about) if about else "",
                ),
                text("td", {"class": f"state state-{a.get('state')}"}, a.get("state")),
                text("td", {"class": "host"}, a.get("host") or "-"),
                tag("td", {"class": "current"}, current_task(a)),
                text("td", {"class": "held num"}, a.get("locks_held") or "-"),
                text("td", {"class": "unread num"}, a.get("unread") or "-"),
                text(
                    "td",
                    {"class": "ago", "data-ts": a.get("last_seen") or ""},
                    ago(a.get("last_seen"), now),
                ),
                text("td", {"class": "mem"}, pair(declared.get("ram_gb"), measured.get("ram_gb"))),
                text(
                    "td", {"class": "mem"}, pair(declared.get("vram_gb"), measured.get("vram_gb"))
                ),
            )
        )
    if not rows:
        return tag(
            "tr",
            None,
            text(
                "td",
                {"colspan": AGENT_COLUMNS, "class": "empty"},
                "no agents registered yet (mesh register NAME)",
            ),
        )
    return "".join(rows)


def tasks_count(view: dict[str, Any]) -> str:
    per_state = (view.get("counts") or {}).get("tasks") or {}
    total = sum(per_state.values())
    open_ = sum(n for s, n in per_state.items() if s not in FINISHED)
    return f"({total}, {open_} open)"


def waits(task: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(id, state) of each dependency the task still waits on: the core's `waits_on` when the
    task has it, else its dependencies not yet completed (their state from the board, `?`
    for one not on it)."""
    given = task.get("waits_on")
    if isinstance(given, list):
        found = []
        for item in given:
            if isinstance(item, dict):
                found.append((str(item.get("id")), str(item.get("state") or "?")))
            elif isinstance(item, str):
                found.append((item, str((by_id.get(item) or {}).get("state") or "?")))
        return found
    if task.get("state") != "queued":
        return []
    found = []
    for dep in task.get("depends_on") or []:
        state = str((by_id.get(dep) or {}).get("state") or "?")
        if state != "completed":
            found.append((dep, state))
    return found


def card(task: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str:
    state = task.get("state")
    waiting = waits(task, by_id)
    blocked = [f"{d} {s}" for d, s in waiting if s in BLOCKING]
    holder = task.get("claimed_by")
    lines = [
        text("div", {"class": "title"}, task.get("title")),
        text(
            "div",
            {"class": "meta"},
            f"{task['id']} · p{task.get('priority')} · by {task.get('created_by') or '-'}",
        ),
    ]
    if holder and state in HELD:
        lines.append(text("div", {"class": "meta holder"}, f"held by {holder}"))
    elif holder and state in FINISHED:
        lines.append(text("div", {"class": "meta holder"}, f"done by {holder}"))
    if blocked:
        lines.append(
            text("div", {"class": "meta blocked"}, f"blocked for good: {', '.join(blocked)}")
        )
    elif waiting:
        lines.append(
            text(
                "div",
                {"class": "meta deps", "data-deps": " ".join(d for d, _ in waiting)},
                "waits on " + ", ".join(f"{d} ({s})" for d, s in waiting),
            )
        )
    if task.get("review"):
        approved = task.get("approved_by")
        lines.append(
            text(
                "div", {"class": "meta"}, f"approved by {approved}" if approved else "needs review"
            )
        )
    if task.get("result"):
        lines.append(text("div", {"class": "meta result"}, f"result: {task['result']}"))
    if state == "review":
        lines.append(
            text(
                "button",
                {"class": "review-open", "type": "button", "data-id": task["id"]},
                "Review…",
            )
        )
    return tag(
        "div",
        {
            "class": f"task {state}",
            "tabindex": "0",
            "data-id": task["id"],
            "data-state": state,
            "data-search": search_text(
                task["id"], task.get("title"), state, holder, task.get("created_by")
            ),
        },
        *lines,
    )


def _claim_order(task: dict[str, Any]) -> tuple[int, str]:
    return (-int(task.get("priority") or 0), str(task["id"]))


def board(view: dict[str, Any]) -> str:
    tasks = view["tasks"]
    per_state = (view.get("counts") or {}).get("tasks") or {}
    by_id = {t["id"]: t for t in tasks}
    columns = []
    for state in TASK_STATES:
        group = [t for t in tasks if t.get("state") == state]
        if state in FINISHED:
            group.sort(key=lambda t: (str(t.get("updated_at") or ""), str(t["id"])), reverse=True)
        else:
            group.sort(key=_claim_order)
        count = per_state.get(state, len(group))
        more = (
            text(
                "div",
                {"class": "meta more"},
                f"… and {count - len(group)} more (mesh task list --state {state})",
            )
            if count > len(group)
            else ""
        )
        columns.append(
            tag(
                "div",
                {"class": "column", "data-state": state, "data-finished": state in FINISHED},
                text("h3", None, f"{state} ({count})"),
                *[card(t, by_id) for t in group],
                more,
            )
        )
    return "".join(columns)


def locks_count(view: dict[str, Any]) -> str:
    total = (view.get("counts") or {}).get("locks", len(view["locks"]))
    more = f"; {len(view['locks'])} shown" if total > len(view["locks"]) else ""
    return f"({total}{more})"


def lock_rows(view: dict[str, Any], now: float) -> str:
    rows = [
        tag(
            "tr",
            {
                "data-path": lock.get("path"),
                "data-holder": lock.get("holder"),
                "data-search": search_text(lock.get("shown"), lock.get("holder")),
            },
            text("td", {"class": "path", "title": lock.get("path")}, lock.get("shown")),
            text("td", None, lock.get("mode")),
            text("td", None, lock.get("holder")),
            text(
                "td",
                {"class": "until", "data-ts": lock.get("expires_at")},
                until(lock.get("expires_at"), now),
            ),
            tag(
                "td",
                None,
                text("button", {"class": "secondary unlock", "type": "button"}, "Force unlock"),
            ),
        )
        for lock in view["locks"]
    ]
    if not rows:
        return tag("tr", None, text("td", {"colspan": 5, "class": "empty"}, "no locks held"))
    return "".join(rows)


def size(value: Any) -> str:
    """An attachment's size as people read it ("12 B", "3.4 KiB")."""
    if not isinstance(value, int) or isinstance(value, bool):
        return ""
    if value < 1024:
        return f"{value} B"
    amount = float(value)
    for unit in ("KiB", "MiB"):
        amount /= 1024
        if amount < 1024:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1024:.1f} GiB"


def read_state(message: dict[str, Any], now: float) -> str:
    read = message.get("read")
    if read:
        return text(
            "span",
            {"class": "read-state read"},
            f"read by {read.get('by')} {ago(read.get('at'), now)}",
        )
    return text("span", {"class": "read-state unread"}, "unread")


def message_items(view: dict[str, Any], now: float) -> str:
    items = []
    for m in view["messages"]:
        body = (
            "(no longer stored)"
            if m.get("body") is None
            else m["body"] + (" …" if m.get("cut") else "")
        )
        files = m.get("attachments") or []
        items.append(
            tag(
                "li",
                {
                    "data-id": m["id"],
                    "data-search": search_text(m.get("from"), m.get("to"), m.get("body")),
                },
                tag(
                    "div",
                    None,
                    text("b", None, m.get("from") or "-"),
                    esc(f" → {m.get('to')} "),
                    text("span", {"class": "urgent"}, "urgent ")
                    if m.get("priority") == "urgent"
                    else "",
                    text(
                        "span",
                        {"class": "dim ago", "data-ts": m.get("at") or ""},
                        ago(m.get("at"), now),
                    ),
                    " · ",
                    read_state(m, now),
                ),
                text("div", {"class": "body"}, body),
                tag(
                    "ul",
                    {"class": "files"},
                    *[
                        text("li", None, f"📎 {f.get('name')} {size(f.get('size'))}".rstrip())
                        for f in files
                    ],
                )
                if files
                else "",
            )
        )
    return "".join(items) or text("li", {"class": "empty"}, "no messages yet")


def event_items(view: dict[str, Any], now: float) -> str:
    items = [
        tag(
            "li",
            {"data-event": e.get("event") or "", "data-search": search_text(e.get("what"))},
            text(
                "span",
                {"class": "dim ago", "data-ts": e.get("time") or ""},
                ago(e.get("time"), now),
            ),
            " ",
            esc(e.get("what") or ""),
        )
        for e in view["recent"]
    ]
    return "".join(items) or text("li", {"class": "empty"}, "nothing recorded yet")


def share_class(share: float) -> str:
    return f"w{min(10, max(0, round(share * 10)))}"


def gauge(label: str, section: dict[str, Any]) -> str:
    limit = section.get("limit_gb") or 0
    declared = section.get("declared_gb") or 0
    share = min(1.0, declared / limit) if limit > 0 else 0.0
    level = "full" if share >= 0.9 else "warn" if share >= 0.7 else ""
    return tag(
        "div",
        {"class": "gauge", "data-resource": label},
        tag(
            "div",
            None,
            text("b", None, label),
            esc(
                f" {gib(declared)} of {gib(limit)} GiB declared · "
                f"agents use {gib(section.get('agents_gb'))} · "
                f"free {gib(section.get('free_gb'))} · "
                f"machine {gib(section.get('used_gb'))} / {gib(section.get('total_gb'))} GiB used"
            ),
        ),
        tag(
            "div",
            {"class": "bar"},
            text(
                "span",
                {"class": f"{level} {share_class(share)}".strip(), "data-share": f"{share:.3f}"},
                "",
            ),
        ),
    )


def budgets(view: dict[str, Any]) -> str:
    found = view.get("budgets") or {}
    parts = [gauge("RAM", found["ram"])] if found.get("ram") else []
    parts.append(
        gauge("GPU", found["gpu"])
        if found.get("gpu")
        else text("div", {"class": "empty"}, "GPU: none found")
    )
    return "".join(parts)


def warnings(view: dict[str, Any]) -> str:
    return "".join(text("li", None, w) for w in view.get("warnings") or [])


_SLOT = re.compile(r"\{\{([A-Z_]+)\}\}")


def page(template: str, view: dict[str, Any] | None, token: str, actor: str) -> str:
    """The page with the current `view` rendered into its slots (`{{NAME}}`), in one pass (a
    value that holds `{{...}}` is never read as a slot)."""
    now = clock.now()
    slots: dict[str, str] = {"TOKEN": esc(token), "ACTOR": esc(actor)}
    if view is not None:
        policy = (view.get("budgets") or {}).get("policy")
        slots.update(
            {
                "MESH_DIR": esc(view.get("mesh_dir")),
                "GENERATED": esc(view.get("generated_at")),
                "POLICY": esc(f"(policy {policy})" if policy else ""),
                "BUDGETS": budgets(view),
                "WARNINGS": warnings(view),
                "AGENTS_COUNT": esc(agents_count(view)),
                "AGENTS": agent_rows(view, now),
                "TASKS_COUNT": esc(tasks_count(view)),
                "BOARD": board(view),
                "LOCKS_COUNT": esc(locks_count(view)),
                "LOCKS": lock_rows(view, now),
                "MESSAGES": message_items(view, now),
                "EVENTS": event_items(view, now),
            }
        )
    return _SLOT.sub(lambda found: slots.get(found.group(1), ""), template)
