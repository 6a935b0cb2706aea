"""Every command's human view, in one place: one renderer per kind of result.

A command returns `Shown(value, view, *args)`; the `command` decorator (common.py) prints the
value as JSON under --json, else calls `view(value, *args)` from here. Views print through
`say`/`note` (control characters spelled out) or the plain `table`; the rich status screen is
drawn by `statusview`, imported only by the views that need it, so `mesh send` stays light.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from drasill_cli.cli.common import note, say
from drasill_cli.cli.render import ago, cell_width, printable

if TYPE_CHECKING:
    from rich.console import Console


def console(width: int | None = None) -> Console:
    """A rich console on stdout, for the status screen."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


# ---- tables ----------------------------------------------------------------------------------

ELLIPSIS = "…"
GAP = 2


def _cut(text: str, width: int) -> str:
    """`text` cut to `width` terminal columns, ending in an ellipsis when cut."""
    if cell_width(text) <= width:
        return text
    kept = ""
    for char in text:
        if cell_width(kept + char) > width - 1:
            break
        kept += char
    return kept + ELLIPSIS if width >= 1 else ""


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    free: Sequence[str] = (),
    wide: bool = False,
    header: bool = True,
) -> None:
    """Every human table: a header, then one record a line, never a cell wrapped onto another.

    Off a terminal (a pipe, a file) each record is one whole line, however long, so `grep` finds
    it by its id. On a terminal a table too wide for it has its `free` columns (free text such as
    a title) cut with an ellipsis, as `mesh status` does; ids, names and paths are never cut, and
    `wide` keeps every cell whole there too (a line is then longer than the terminal).
    `header` False leaves out the line of column names (a list whose lines explain themselves).
    """
    import shutil

    texts = [
        [printable(" ".join(("-" if cell is None else str(cell)).split())) for cell in row]
        for row in rows
    ]
    widths = [
        max([cell_width(column)] + [cell_width(row[i]) for row in texts])
        for i, column in enumerate(columns)
    ]
    cuttable = [i for i, column in enumerate(columns) if column in free]
    if cuttable and not wide and sys.stdout.isatty():
        excess = sum(widths) + GAP * (len(columns) - 1) - shutil.get_terminal_size().columns
        for i in reversed(cuttable):  # the last free column gives first
            if excess <= 0:
                break
            floor = max(cell_width(columns[i]), 8)
            give = min(excess, max(0, widths[i] - floor))
            widths[i] -= give
            excess -= give
        texts = [
            [_cut(cell, widths[i]) if i in cuttable else cell for i, cell in enumerate(row)]
            for row in texts
        ]
    out = []
    for cells in [list(columns), *texts] if header else texts:
        padded = [cell + " " * (widths[i] - cell_width(cell)) for i, cell in enumerate(cells)]
        out.append((" " * GAP).join(padded).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


# ---- agents ----------------------------------------------------------------------------------


def agent(found: dict[str, Any], verb: str) -> None:
    """One agent as a line: `registered alice (active) pid 42 session main`."""
    where = f" session {found['session']}" if found.get("session") else ""
    pid = f" pid {found['pid']}" if found.get("pid") else ""
    say(f"{verb} {found['name']} ({found['state']}){pid}{where}")


def unregistered(found: dict[str, Any]) -> None:
    """`mesh unregister`: the agent's line, and where its unread mail went."""
    agent(found, "unregistered")
    if found["archived"]:
        say(
            f"its {found['archived']} unread message(s) were archived; read them with "
            f"`mesh history {found['name']} --archived`"
        )


def agents(found: list[dict[str, Any]], hosts: bool, wide: bool) -> None:
    """`mesh agents`: a table (with each agent's host when the mesh spans hosts)."""
    if not found:
        say("no agents registered (mesh register NAME)")
        return
    columns = ["name", "state", "unread", *(["host"] if hosts else []), "role", "tool"]
    table(
        [*columns, "last seen"],
        [
            [
                a["name"],
                a["state"],
                a["unread"],
                *([a.get("host")] if hosts else []),
                a["role"],
                a["tool"],
                ago(a["last_seen"]),
            ]
            for a in found
        ],
        free=("role",),
        wide=wide,
    )


# ---- tasks -----------------------------------------------------------------------------------


def _who(task: dict[str, Any]) -> str:
    """`working by ann`, `review, done by ann`, `completed, done by ann, approved by bob`."""
    claimant = task.get("claimed_by")
    if not claimant:
        return str(task["state"])
    if task["state"] in ("claimed", "working"):
        return f"{task['state']} by {claimant}"
    words = f"{task['state']}, done by {claimant}"
    if task.get("approved_by"):
        words += f", approved by {task['approved_by']}"
    return words


def task(found: dict[str, Any], verb: str) -> None:
    """One task as a line (plus who was told by message, if anyone)."""
    say(f"{verb} {found['id']} [{_who(found)}] {found['title']}")
    if found.get("review_note") and verb in ("approved", "rejected"):
        say(f"review note: {found['review_note']}")
    if "notified" in found:
        told = ", ".join(found["notified"])
        note(f"told {told} by message" if told else "no other agent is registered to tell")


def next_thing(found: dict[str, Any]) -> None:
    """`mesh next`: the message, the review or the task claimed, and what to do with it."""
    kind = found["kind"]
    if kind == "message":
        message(found["message"])
        if found["unread"]:
            note(f"{found['unread']} more unread: run `mesh next` again")
    elif kind == "review":
        review = found["review"]
        task(review, "review")
        if review["result"]:
            say(f"its result: {review['result']}")
        say(
            f"approve with `mesh task approve {review['id']} --note TEXT`, or send it back "
            f"with `mesh task reject {review['id']} --note TEXT`"
        )
    else:
        task(found["task"], "claimed")


def waits(task: dict[str, Any]) -> str:
    """What a queued task waits on, for people: `-`, `t-0001 (working)`, or
    `blocked for good: t-0001 (failed)`."""
    deps = ", ".join(f"{dep['id']} ({dep['state']})" for dep in task.get("waits_on") or [])
    if not deps:
        return "-"
    return f"blocked for good: {deps}" if task.get("blocked") else deps


def tasks(found: list[dict[str, Any]], state: str | None, ready: bool, wide: bool) -> None:
    """`mesh task list`: a table, one task a line; on a terminal the titles are cut to fit."""
    if not found and ready:
        say("no task is ready (queued with every dependency completed); see `mesh task list`")
    elif not found:
        say(f"no tasks in state {state}" if state else "no tasks yet (mesh task add TITLE)")
    if not found:
        return
    table(
        ["id", "state", "pri", "claimed by", "requeued", "updated", "waits on", "title"],
        [
            [
                t["id"],
                t["state"],
                t["priority"],
                t["claimed_by"],
                t["attempts"] or "-",
                ago(t["updated_at"]),
                waits(t),
                t["title"],
            ]
            for t in found
        ],
        free=("title",),
        wide=wide,
    )


def task_in_full(found: dict[str, Any]) -> None:
    """`mesh task show`: every field on its line, then the body and the result."""
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
        "waits_on",
        "review",
        "approved_by",
        "review_note",
        "cwd",
    ):
        value = waits(found) if key == "waits_on" else found.get(key)
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        say(f"{key + ':':13} {'-' if value is None else value}")
    for key in ("body", "result"):
        if found.get(key):
            say(f"{key}:\n{found[key]}")


# ---- messages --------------------------------------------------------------------------------


def message(found: dict[str, Any]) -> None:
    """A header line (from, time, priority, id), attachments, then the body as stored."""
    header = [f"from {found['from']}", found["created_at"], found["priority"], found["id"]]
    if found.get("reply_to"):
        header.append(f"reply to {found['reply_to']}")
    say(" | ".join(header))
    for item in found.get("attachments") or []:
        say(f"attachment {item['name']} ({item['size']} bytes): {item['path']}")
    body = printable(found["body"])
    sys.stdout.write(body if body.endswith("\n") else body + "\n")


def messages(found: dict[str, Any] | list[dict[str, Any]]) -> None:
    """`mesh inbox`: one message, or several separated by a blank line."""
    for index, item in enumerate(found if isinstance(found, list) else [found]):
        if index:
            say("")
        message(item)


def sent(found: dict[str, Any] | list[dict[str, Any]]) -> None:
    """`mesh send`: one line per message sent."""
    for item in found if isinstance(found, list) else [found]:
        extra = f", {len(item['attachments'])} attachment(s)" if item["attachments"] else ""
        say(f"sent {item['id']} to {item['to']} ({item['priority']}{extra})")


def last_message(found: dict[str, Any] | None, who: str) -> None:
    """`mesh inbox --last`: the message consumed last, or why there is none."""
    if found is not None:
        message(found)
    else:
        note(f"{who} has consumed no message that is still kept (see `mesh history`)")


def empty_inbox(found: None, who: str, wait: float | None) -> None:
    """`mesh inbox` with nothing to read."""
    del found
    waited = f" after waiting {wait:g}s" if wait is not None else ""
    note(f"no unread messages for {who}{waited}; wait for one with `mesh inbox --wait SECONDS`")


def history(found: list[dict[str, Any]], who: str, archived: bool) -> None:
    """`mesh history`: one line per message, newest first, with the body's first line (cut to
    fit on a terminal)."""
    if not found:
        say(f"no archived mail for {who}" if archived else f"no messages sent or read by {who}")
        return
    table(
        ["sent", "from -> to", "id", "body"],
        [
            [
                item["created_at"],
                f"{item['from']} -> {item['to']}",
                item["id"],
                item["body"].strip().splitlines()[0] if item["body"].strip() else "",
            ]
            for item in found
        ],
        free=("body",),
        header=False,
    )


def receipts(found: list[dict[str, Any]], who: str) -> None:
    """`mesh history --sent`: one line per message sent, with what became of it."""
    if not found:
        say(f"no messages sent by {who}")
        return
    table(
        ["sent", "to", "id", "state", "body"],
        [
            [
                item["created_at"],
                item["to"],
                item["id"],
                f"read {item['read_at']}"
                if item["state"] == "read" and item["read_at"]
                else item["state"],
                item["body"].strip().splitlines()[0] if item["body"].strip() else "",
            ]
            for item in found
        ],
        free=("body",),
        header=False,
    )


# ---- locks -----------------------------------------------------------------------------------


def lock_lines(found: list[dict[str, Any]], verb: str) -> None:
    """Locks granted or released, one line each (a held lock says its lease)."""
    from drasill_cli import lockpaths

    for lock in found:
        lease = f", lease {lock['ttl']:g}s until {lock['expires_at']}" if verb == "locked" else ""
        say(f"{verb} {lockpaths.shown(lock)} ({lock['mode']}, {lock['holder']}{lease})")


def locks(found: list[dict[str, Any]], me: str | None) -> None:
    """`mesh locks`: a table, the acting agent's own locks marked."""
    if not found:
        say("no locks held (mesh lock PATH)")
        return
    from drasill_cli import lockpaths

    table(
        ["path", "mode", "holder", "expires", "state"],
        [
            [
                lockpaths.shown(lock),
                lock["mode"],
                f"{lock['holder']} (you)" if lock["holder"] == me else lock["holder"],
                lock["expires_at"],
                "stale" if lock["stale"] else "held",
            ]
            for lock in found
        ],
    )


# ---- lifecycle and the audit log -------------------------------------------------------------


def prune_lines(report: dict[str, Any]) -> list[str]:
    """What a prune did (or would do), one sentence each."""
    verb = "would " if report["dry_run"] else ""
    lines = [f"{verb}mark {name} dead" for name in report["marked_dead"]]
    lines += [f"{verb}remove {name}" for name in report["removed"]]
    lines += [
        f"{verb}archive {count} unread message(s) of {name}"
        for name, count in report["archived_messages"].items()
    ]
    from drasill_cli import lockpaths

    lines += [
        f"{verb}release {lock['mode']} lock on {lockpaths.shown(lock)} held by {lock['holder']}"
        for lock in report["locks_released"]
    ]
    lines += [f"{verb}requeue task {t['id']} ({t['title']})" for t in report["tasks_requeued"]]
    lines += [
        f"{verb}abandon task {t['id']} ({t['title']}): too many attempts"
        for t in report["tasks_abandoned"]
    ]
    lines += [f"{verb}release the budget of {name}" for name in report["budgets_released"]]
    if report["temp_files_removed"]:
        lines.append(f"{verb}remove {len(report['temp_files_removed'])} stale temp file(s)")
    if report["history_expired"]:
        lines.append(
            f"{verb}delete {len(report['history_expired'])} sent or read message(s) "
            "past messages.history_days"
        )
    if report["attachments_removed"]:
        lines.append(
            f"{verb}remove the attachments of {len(report['attachments_removed'])} "
            "message(s) never delivered"
        )
    return lines


def prune(report: dict[str, Any]) -> None:
    """`mesh prune`: nothing when nothing changed (with --dry-run it says so)."""
    lines = prune_lines(report)
    for line in lines:
        say(line)
    if not lines and report["dry_run"]:
        say("nothing to prune: no dead agents, stale locks, old messages or stale files")


def log_event(event: dict[str, Any]) -> None:
    """`mesh log`: one audit event as `TIME ACTOR EVENT key=value ...`."""
    details = " ".join(
        f"{key}={value}"
        for key, value in event.items()
        if key not in ("time", "event", "actor") and value not in (None, False, [], {})
    )
    say(f"{event.get('time')} {event.get('actor') or '-'} {event.get('event')} {details}".rstrip())


# ---- mesh watch ------------------------------------------------------------------------------

_WATCH: dict[str, str] = {
    "start": "watching {mesh} (pid {pid})",
    "stop": "stopped",
    "queued": "{agent}: {messages} new message(s) waiting for a wake",
    "wake": "woke {agent} ({backend} {session}): {text}",
    "busy": "{agent} is busy; its wake waits until it is idle",
    "blocked": "{agent} cannot be woken: {reason}",
    "dead": "{agent}: {backend} session {session} is gone; reported dead",
    "retry": "{agent}: wake failed ({error}); retrying in {in_s:g} s",
    "failed": "{agent}: wake failed {attempts} times ({error}); waiting for new mail",
    "consumed": "{agent} has read the mail it was woken for",
    "warning": "warning: {message}",
    "error": "error in {job} {agent}: {error}",
}

# What a lifecycle pass did, per key of its report: a count goes in {n}.
_LIFECYCLE: dict[str, str] = {
    "marked_dead": "{n} agent(s) marked dead",
    "removed": "{n} agent(s) removed",
    "archived_messages": "unread mail of {n} agent(s) archived",
    "locks_released": "{n} lock(s) released",
    "tasks_requeued": "{n} task(s) requeued",
    "tasks_abandoned": "{n} task(s) abandoned",
    "budgets_released": "{n} budget(s) released",
    "temp_files_removed": "{n} stale temp file(s) removed",
    "history_expired": "{n} old message(s) deleted",
    "attachments_removed": "attachments of {n} undelivered message(s) removed",
}
_BUDGET_ACTION = {
    "warn": "warned",
    "pause": "paused",
    "kill": "killed",
    "resume": "resumed",
    "report": "not acting on",
}


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return str(value)


def _lifecycle_line(event: dict[str, Any]) -> str:
    parts = [
        _LIFECYCLE.get(key, key.replace("_", " ") + " {n}").format(n=value)
        for key, value in event.items()
        if key not in ("event", "time")
    ]
    return "lifecycle: " + (", ".join(parts) or "nothing to do") + " (see mesh log)"


def _hardware_line(event: dict[str, Any]) -> str:
    done = _BUDGET_ACTION.get(str(event.get("action")), str(event.get("action")))
    over = ", ".join(
        f"uses {_gb(o['measured_gb'])} GiB of {o['resource']} (declared {_gb(o['declared_gb'])})"
        for o in event.get("over") or []
        if isinstance(o, dict) and {"measured_gb", "resource", "declared_gb"} <= set(o)
    )
    why = over or event.get("reason") or "over its budget"
    if event.get("action") == "report":
        why = f"{why}; its processes are not provably its own: {event.get('reason')}"
    return f"budget: {done} {event.get('agent')}: {why}"


def describe_watch_event(event: dict[str, Any]) -> str:
    """One watch event as a sentence for people: never raw JSON."""
    kind = event["event"]
    if kind == "lifecycle":
        return _lifecycle_line(event)
    if kind == "hardware":
        return _hardware_line(event)
    template = _WATCH.get(kind)
    try:
        text = template.format(**event) if template else None
    except (KeyError, ValueError):
        text = None
    if text is None:
        details = "; ".join(f"{k} {_plain(v)}" for k, v in event.items() if k != "event")
        text = f"{kind}: {details}" if details else str(kind)
    return text


def watch_event(stamped: dict[str, Any], event: dict[str, Any]) -> None:
    """One watch event (as the watcher gave it, without the time stamp JSON adds) as a line on
    stderr, for people and journald, flushed at once."""
    del stamped
    from drasill_cli import clock

    text = printable(describe_watch_event(event), lines=False)
    sys.stderr.write(f"{clock.iso()[11:19]} {text}\n")
    sys.stderr.flush()


def watch_pass(summary: dict[str, Any]) -> None:
    """`mesh watch --once`: its events went to stderr as they happened; nothing more."""
    del summary


# ---- status, doctor, tools, bridge, demo, hardware -------------------------------------------


def status(snap: dict[str, Any]) -> None:
    """`mesh status`: the status screen, fitted to the terminal."""
    from drasill_cli.cli.statusview import status_screen

    shown = console()
    shown.print(status_screen(snap, width=shown.width))


class ScreensOnChange:
    """`mesh status --watch` off a terminal (a pipe, a log file): a fresh plain render after
    each change, each after a separator line with its time; a quiet refresh that changed
    nothing prints nothing."""

    def __init__(self) -> None:
        self.previous: Any = None

    def __call__(self, snap: dict[str, Any]) -> None:
        from drasill_cli import status
        from drasill_cli.cli.statusview import status_screen

        key = status.change_key(snap)
        if self.previous is not None and key == self.previous:
            return
        if self.previous is not None:
            say("")
        self.previous = key
        say(f"---- {snap['generated_at']} " + "-" * 40)
        shown = console()
        shown.print(status_screen(snap, width=shown.width))


MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(report: dict[str, Any]) -> None:
    """`mesh doctor`: one line per check (and its fix), then the verdict."""
    pad = max(len(check["name"]) for check in report["checks"])
    for check in report["checks"]:
        need = " (required)" if check["required"] and check["status"] == "fail" else ""
        say(f"{MARK[check['status']]} {check['name']:<{pad}} {check['detail']}{need}")
        if check["fix"] and check["status"] != "ok":
            say(f"{'':{pad + 5}} fix: {check['fix']}")
    verdict = "ready" if report["ok"] else "not ready: fix the FAIL lines above"
    where = (
        f"mesh url {report['mesh_url']}"
        if report.get("mesh_url")
        else f"mesh dir {report['mesh_dir'] or '(not resolved)'}"
    )
    say(f"{where}: {verdict}")


def tools(rows: list[dict[str, Any]]) -> None:
    """`mesh tools`: a table, and how to add one when none is installed."""
    table(
        ["tool", "installed", "version", "runs"],
        [
            [
                row["name"],
                "yes" if row["installed"] else "no",
                row["version"] or "-",
                " ".join(row["command"]),
            ]
            for row in rows
        ],
    )
    if not any(row["installed"] for row in rows):
        note('none installed; add your own with [tools.NAME] command = ["mycli", "{prompt}"]')


def bridge_result(result: dict[str, Any]) -> None:
    """One handled task, as a human line: `STATE ID: TITLE`."""
    handled = result["task"]
    say(f"{handled['state']} {handled['id']}: {handled['title']}")


def demo(result: dict[str, Any]) -> None:
    """`mesh demo`: its steps on stderr, then the status screen of the demo mesh."""
    from drasill_cli.cli.statusview import status_screen

    for step in result["steps"]:
        note(f"- {step}")
    note("")
    shown = console()
    shown.print(status_screen(result["status"], width=shown.width))
    if result["kept"]:
        note(f"\nthe demo mesh is kept: mesh --mesh-dir {result['kept']} status")


def _gb(value: float | None) -> str:
    """An amount of memory in GiB, as everywhere (`units.gib`)."""
    from drasill_cli.units import gib

    return gib(value)


def _hw_summary(label: str, section: dict[str, Any]) -> str:
    return (
        f"{label}: total {_gb(section['total_gb'])} GiB, used {_gb(section['used_gb'])}, "
        f"available {_gb(section['available_gb'])}; budget limit {_gb(section['limit_gb'])}, "
        f"declared {_gb(section['declared_gb'])}, free {_gb(section['free_gb'])}, "
        f"agents use {_gb(section['agents_gb'])}"
    )


def hardware(report: dict[str, Any]) -> None:
    """`mesh hw`: RAM and GPU lines, the policy, then a table of the agents' budgets."""
    say(_hw_summary("RAM", report["ram"]))
    gpu = report.get("gpu")
    if gpu is None:
        say("GPU: none found (no device, driver or NVML)")
    else:
        say(_hw_summary("GPU", gpu))
        for device in gpu["devices"]:
            say(
                f"  gpu{device['index']} {device['name']}: {_gb(device['used_gb'])} of "
                f"{_gb(device['total_gb'])} GiB used, {len(device['processes'])} processes"
            )
    say(f"policy: {report['policy']}")
    if not report["agents"]:
        return
    columns = ["agent", "state", "ram declared", "ram used"]
    if gpu is not None:
        columns += ["vram declared", "vram used"]
    rows = []
    for item in report["agents"]:
        row = [
            item["name"],
            item["state"] + (" (paused)" if item["paused"] else ""),
            _gb(item["declared"]["ram_gb"]),
            _gb(item["measured"]["ram_gb"]),
        ]
        if gpu is not None:
            row += [_gb(item["declared"]["vram_gb"]), _gb(item["measured"]["vram_gb"])]
        rows.append([*row, ", ".join(o["resource"] for o in item["over"]) or "-"])
    table([*columns, "over"], rows)


# ---- onboarding, transfer, dashboard ---------------------------------------------------------


def prompt(found: dict[str, Any]) -> None:
    """`mesh prompt`: the text alone."""
    say(found["prompt"])


def launched(found: dict[str, Any], tool: str) -> None:
    """`mesh launch`: where the agent runs, and how to attach to it."""
    attach = (
        f"tmux attach -t {found['session']}"
        if found["backend"] == "tmux"
        else f"hm attach {found['session']}"
    )
    say(f"launched {found['name']} ({tool}) in {found['backend']} session {found['session']}")
    sys.stderr.write(f"attach with: {attach}\n")
    if not found["prompt_passed"]:
        sys.stderr.write(
            f"note: {tool} has no known system-prompt flag; give it the text of "
            f"`mesh prompt {found['name']}` yourself\n"
        )


def launch_hooks(hooks: dict[str, Any] | None) -> None:
    """`mesh launch`, after its output (JSON too): the hooks it installed, or a hint."""
    if hooks is not None and hooks["changed"]:
        note(f"the mesh's {hooks['cli']} hooks installed in {hooks['path']}")
    elif hooks is not None and not hooks["installed"]:
        note(
            f"hint: `mesh hooks install {hooks['cli']}` (or `mesh launch --hooks`) lets the mesh "
            "deliver mail to this agent and refuse edits of files others hold"
        )


def imported(found: dict[str, Any], location: str) -> None:
    """`mesh import`: per kind, then in all, what was restored and what was already there."""
    for kind, counts in found["kinds"].items():
        say(f"{kind}: {counts['restored']} restored, {counts['present']} already present")
    say(
        f"imported into {location}: {found['restored']} restored, {found['present']} already "
        "present" + ("; nothing was missing" if not found["restored"] else "")
    )


def dashboard_url(found: dict[str, Any]) -> None:
    """`mesh dashboard`: the URL alone, as the first line."""
    sys.stdout.write(found["url"] + "\n")


def hooks_changed(found: dict[str, Any], verb: str) -> None:
    """`mesh hooks install|uninstall`: the file's new text on a dry run, else what changed."""
    if found["dry_run"]:
        if found["text"] is None:
            note(f"dry run: {found['path']} would be removed (nothing but the mesh's hooks)")
        else:
            sys.stdout.write(printable(found["text"]))
            note(f"dry run: {found['path']} not written")
        return
    cli, path = found["cli"], found["path"]
    if not found["changed"]:
        state = "already installed" if verb == "install" else "not installed"
        say(f"{cli}: the mesh's hooks are {state} in {path}: nothing changed")
    elif verb == "install":
        say(f"{cli}: the mesh's hooks installed in {path}")
        if cli == "codex":
            note("codex runs them once trusted: start codex, run /hooks, and trust them")
    elif found["removed"]:
        say(f"{cli}: the mesh's hooks removed; {path} held nothing else and is removed")
    else:
        say(f"{cli}: the mesh's hooks removed from {path} (every other entry kept)")


def hooks_status(found: dict[str, Any]) -> None:
    """`mesh hooks status`: one row per CLI and scope."""
    rows = []
    for row in found["entries"]:
        if row.get("error"):
            state = f"unreadable: {row['error']}"
        elif row["installed"]:
            state = "installed"
            if row.get("trusted") is False:
                state += " (not trusted yet: codex /hooks)"
        elif any(row["events"].values()):
            missing = [event for event, there in row["events"].items() if not there]
            state = f"partly (missing {', '.join(missing)})"
        else:
            state = "-"
        rows.append([row["cli"], row["scope"], state, row["path"]])
    table(["cli", "scope", "hooks", "file"], rows)
    if found["project"] is None:
        note("not inside a git work tree: project scope not shown")
