"""How an audit event reads for people: one short line, the same on the terminal and the page.

`mesh status` shows it in its Recent section and the dashboard's server sends it with each
event (`what`), so the two never describe an event differently. Plain text: each renderer
escapes it for its medium (the terminal spells control characters out, the page sets it as
text).
"""

from __future__ import annotations

import os
from typing import Any


def place(path: str) -> str:
    """A path as the person would write it here: relative to the working directory when
    under it, `~/...` under the home directory, else absolute."""
    here = os.getcwd()
    if path == here:
        return "."
    if here != "/" and path.startswith(here + "/"):
        return os.path.relpath(path, here)
    home = os.path.expanduser("~")
    if home not in ("", "/") and path.startswith(home.rstrip("/") + "/"):
        return "~" + path[len(home.rstrip("/")) :]
    return path


def lock_path(path: str) -> str:
    """A locked path as a person reads it: a key in a git repository in its human form
    (`src/a.py in repository 1a2b3c4d`, as `mesh locks` writes it), else `place(path)`."""
    from drasill_cli import lockpaths

    if lockpaths.split_key(path) is not None:
        return lockpaths.shown({"path": path})
    return place(path)


def describe_event(event: dict[str, Any]) -> str:
    """One audit event as a short line: messages as `from -> to`, the rest as `actor event`
    and what it touched (a task, an agent, or the first path)."""
    actor = event.get("actor") or "-"
    kind = str(event.get("event"))
    if kind == "send":
        urgent = " (urgent)" if event.get("priority") == "urgent" else ""
        return f"{actor} -> {event.get('to')}{urgent}"
    if kind == "consume":
        return f"{actor} read a message from {event.get('sender')}"
    target = event.get("task") or event.get("agent") or ""
    if not target and isinstance(event.get("paths"), list) and event["paths"]:
        target = lock_path(str(event["paths"][0]))
    return f"{actor} {kind} {target}".rstrip()
