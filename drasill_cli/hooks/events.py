"""The neutral hook event and answer: what every CLI adapter parses into and renders from."""

from __future__ import annotations

import dataclasses

# The mesh's own names for the events it handles (`mesh hook CLI EVENT`).
SESSION_START = "session-start"
PRE_TOOL = "pre-tool"
POST_TOOL = "post-tool"
PROMPT = "prompt"
STOP = "stop"
SESSION_END = "session-end"
EVENTS = (SESSION_START, PRE_TOOL, POST_TOOL, PROMPT, STOP, SESSION_END)


@dataclasses.dataclass
class Event:
    """One hook call, whatever CLI made it.

    `paths`: the files an edit tool is about to write (absolute, or relative to `cwd`), empty
    for a tool that edits nothing; `stop_active`: the CLI says it is already continuing because
    of a stop hook (`stop_hook_active`); `cli_pid`: the CLI's own pid when it says so
    (`CLAUDE_PID`)."""

    cli: str
    kind: str
    session_id: str | None = None
    cwd: str | None = None
    tool: str | None = None
    paths: list[str] = dataclasses.field(default_factory=list)
    stop_active: bool = False
    cli_pid: int | None = None


@dataclasses.dataclass
class Answer:
    """What the mesh says back. `deny`: refuse the edit (reason for the model); `context`:
    text for the model's context; `block_stop`: refuse the end of turn (the reason is
    `context`); `notice`: a line for the user (the mesh unreachable, a hook error)."""

    deny: str | None = None
    context: str | None = None
    block_stop: bool = False
    notice: str | None = None
