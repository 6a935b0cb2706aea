"""Each CLI's hook protocol: its payload parsed into an `Event`, an `Answer` rendered back.

Facts from the CLIs' hook references (see `shared/reference/agent-cli-hooks.md`, keys CC-H,
CX-H, CX-SRC, CX-AP, GM-REF, GM-SRC, CP-REF, CP-CFG; fixtures in tests/fixtures/hooks/):

- every answer is exit 0 with a JSON object (or nothing) on stdout: Claude honours JSON on exit
  0; Codex fails a Stop hook whose stdout is not JSON and counts exit 2 with an empty stderr as
  a failure; Gemini turns any non-JSON exit other than 0 and 1 into a deny. So a refusal is
  always JSON, never an exit code, and nothing but the JSON is ever written to stdout;
- Claude and Codex: a refused edit is `hookSpecificOutput.permissionDecision: "deny"` with
  `permissionDecisionReason` (read by the model); context is
  `hookSpecificOutput.additionalContext` (with `hookEventName`); a refused stop is
  `decision: "block"` + `reason` (the model continues with the reason); `systemMessage` is
  shown to the user;
- Gemini: a refused edit (BeforeTool) and a refused stop (AfterAgent) are `decision: "deny"`
  + `reason`; context (SessionStart, BeforeAgent, AfterTool) is
  `hookSpecificOutput.additionalContext`;
- Copilot CLI: preToolUse `permissionDecision: "deny"` + `permissionDecisionReason` at the
  top level; `additionalContext` at the top level (postToolUse, userPromptSubmitted);
  agentStop `decision: "block"` + `reason`.

Goose is left out: its hooks can refuse an edit (PreToolUse) and a stop, but document no field
that puts text into the model's context, so mail could not be delivered (GS-H).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from drasill_cli.hooks import events
from drasill_cli.hooks.events import Answer, Event
from drasill_cli.hooks.patch import command_text, patch_paths

CLIS = ("claude", "codex", "gemini", "copilot")

# The CLI's own event name for each of the mesh's events (as installed, and as the payload's
# `hook_event_name` says). A CLI without an event here does not fire it.
NATIVE: dict[str, dict[str, str]] = {
    "claude": {
        events.SESSION_START: "SessionStart",
        events.PRE_TOOL: "PreToolUse",
        events.POST_TOOL: "PostToolUse",
        events.PROMPT: "UserPromptSubmit",
        events.STOP: "Stop",
        events.SESSION_END: "SessionEnd",
    },
    "codex": {  # no SessionEnd in Codex (CX-H)
        events.SESSION_START: "SessionStart",
        events.PRE_TOOL: "PreToolUse",
        events.POST_TOOL: "PostToolUse",
        events.PROMPT: "UserPromptSubmit",
        events.STOP: "Stop",
    },
    "gemini": {
        events.SESSION_START: "SessionStart",
        events.PRE_TOOL: "BeforeTool",
        events.POST_TOOL: "AfterTool",
        events.PROMPT: "BeforeAgent",
        events.STOP: "AfterAgent",
        events.SESSION_END: "SessionEnd",
    },
    "copilot": {
        events.SESSION_START: "sessionStart",
        events.PRE_TOOL: "preToolUse",
        events.POST_TOOL: "postToolUse",
        events.PROMPT: "userPromptSubmitted",
        events.STOP: "agentStop",
        events.SESSION_END: "sessionEnd",
    },
}

# The tools that write files, per CLI, and where each names its file.
EDIT_TOOLS: dict[str, dict[str, str]] = {
    "claude": {
        "Edit": "file_path",
        "Write": "file_path",
        "MultiEdit": "file_path",
        "NotebookEdit": "notebook_path",
    },
    "gemini": {"write_file": "file_path", "replace": "file_path"},
    "copilot": {"edit": "path", "create": "path", "Edit": "file_path", "Write": "file_path"},
}
# The matcher each CLI's pre-tool entry is installed with (only edit tools reach the hook).
EDIT_MATCHERS = {
    "claude": "Edit|Write|MultiEdit|NotebookEdit",
    "codex": "^apply_patch$|^Bash$",
    "gemini": "write_file|replace",
    "copilot": "edit|create",
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value and "\0" not in value else None


def _object(value: Any) -> dict[str, Any]:
    """A tool's arguments: an object, or (Copilot's `toolArgs`) a JSON string of one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _pid(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    pid = int(value)
    return pid if 0 < pid < 2**31 else None


def parse(cli: str, kind: str, payload: Mapping[str, Any], environ: Mapping[str, str]) -> Event:
    """The neutral event of one hook call. Unknown or missing fields are left empty: a payload
    from another version of the CLI is read as far as it goes, never refused."""
    session = _text(payload.get("session_id")) or _text(payload.get("sessionId"))
    cwd = _text(payload.get("cwd")) or _text(payload.get("working_dir"))
    if cli == "gemini":
        cwd = cwd or _text(environ.get("GEMINI_CWD"))
        session = session or _text(environ.get("GEMINI_SESSION_ID"))
    event = Event(cli=cli, kind=kind, session_id=session, cwd=cwd)
    if cli == "claude":
        event.cli_pid = _pid(environ.get("CLAUDE_PID"))
    event.stop_active = payload.get("stop_hook_active") is True
    tool = _text(payload.get("tool_name")) or _text(payload.get("toolName"))
    event.tool = tool
    if kind == events.PRE_TOOL and tool is not None:
        event.paths = edit_paths(cli, tool, payload)
    return event


def edit_paths(cli: str, tool: str, payload: Mapping[str, Any]) -> list[str]:
    """The files a tool call is about to write (empty: it writes none that the mesh sees)."""
    args = _object(payload.get("tool_input", payload.get("toolArgs")))
    if cli == "codex":
        command = command_text(args.get("command"))
        if tool == "apply_patch" or "*** Begin Patch" in command:
            return patch_paths(command)
        return []
    field = EDIT_TOOLS.get(cli, {}).get(tool)
    path = _text(args.get(field)) if field else None
    return [path] if path else []


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def render(event: Event, answer: Answer) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `answer` in the protocol of `event.cli`."""
    out: dict[str, Any] = {}
    native = NATIVE[event.cli].get(event.kind, event.kind)
    if event.cli == "copilot":
        if answer.deny is not None:
            out = {"permissionDecision": "deny", "permissionDecisionReason": answer.deny}
        elif answer.block_stop and answer.context:
            out = {"decision": "block", "reason": answer.context}
        elif answer.context:
            out = {"additionalContext": answer.context}
    elif event.cli == "gemini":
        if answer.deny is not None:
            out = {"decision": "deny", "reason": answer.deny}
        elif answer.block_stop and answer.context:
            out = {"decision": "deny", "reason": answer.context}
        elif answer.context and event.kind != events.STOP:
            out = {
                "hookSpecificOutput": {"hookEventName": native, "additionalContext": answer.context}
            }
    elif answer.deny is not None:  # claude, codex
        out = {
            "hookSpecificOutput": {
                "hookEventName": native,
                "permissionDecision": "deny",
                "permissionDecisionReason": answer.deny,
            }
        }
    elif answer.block_stop and answer.context:
        out = {"decision": "block", "reason": answer.context}
    elif answer.context and event.kind != events.STOP:
        out = {"hookSpecificOutput": {"hookEventName": native, "additionalContext": answer.context}}
    stderr = ""
    if answer.notice:
        out["systemMessage"] = answer.notice
        stderr = answer.notice + "\n"
    return 0, _dump(out) if out else "", stderr
