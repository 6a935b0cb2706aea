"""The mesh's entries in each CLI's hook settings, as pure functions on the file's text.

`install(cli, text)` returns the file with the mesh's entries (each calls `mesh hook CLI EVENT`)
merged in: every other entry kept as it was, the mesh's own replaced (so a second install
changes nothing); `uninstall(cli, text)` removes exactly what install added (None when nothing
else is left: the caller may remove the file); `status(cli, text)` says which of the mesh's
events are installed. The caller (`mesh hooks install|uninstall|status`) reads and writes the
file, at the path `settings_path` names.

Files (see `shared/reference/agent-cli-hooks.md`):
- claude: `.claude/settings.json` (project) or `~/.claude/settings.json` (user), key `hooks`:
  event -> [{matcher?, hooks: [{type: command, command, timeout (s)}]}] (CC-H);
- codex: `.codex/hooks.json` or `~/.codex/hooks.json`, the same shape (CX-H); Codex runs a
  hook only once its definition is trusted (`/hooks`), see `codex_trust`;
- gemini: `.gemini/settings.json` or `~/.gemini/settings.json`, the same shape with `name`
  and a timeout in milliseconds (GM-REF);
- copilot: a file of the mesh's own, `.github/hooks/drasill-mesh.json` or
  `~/.copilot/hooks/drasill-mesh.json`: `{version: 1, hooks: {event: [{type, bash,
  timeoutSec}]}}` (CP-REF).
"""

from __future__ import annotations

import json
import re
from typing import Any

from drasill_cli.hooks import events
from drasill_cli.hooks.protocols import CLIS, EDIT_MATCHERS, NATIVE

PROGRAM = "mesh"
# A command is the mesh's when it runs `mesh hook CLI EVENT` (any path to `mesh`).
_OURS = re.compile(r"(?:^|[/\s])mesh hook (?:claude|codex|gemini|copilot) [a-z-]+$")
NAME_PREFIX = "drasill-mesh-"  # Gemini handlers carry a name
TIMEOUT_S = {events.STOP: 30, events.SESSION_END: 5}
DEFAULT_TIMEOUT_S = 10
# Which tools each event fires for (None: all tools, or an event without a matcher).
MATCHERS: dict[str, dict[str, str]] = {
    "claude": {events.PRE_TOOL: EDIT_MATCHERS["claude"]},
    "codex": {events.PRE_TOOL: "^(apply_patch|Bash)$"},  # Bash: a patch in shell form
    "gemini": {events.PRE_TOOL: EDIT_MATCHERS["gemini"], events.POST_TOOL: ".*"},
    "copilot": {},
}
FILES = {
    "claude": (".claude/settings.json", ".claude/settings.json"),
    "codex": (".codex/hooks.json", ".codex/hooks.json"),
    "gemini": (".gemini/settings.json", ".gemini/settings.json"),
    "copilot": (".github/hooks/drasill-mesh.json", ".copilot/hooks/drasill-mesh.json"),
}


class SettingsError(ValueError):
    """The settings file is not what the CLI reads (not a JSON object, `hooks` not an object)."""


def settings_path(cli: str, scope: str, top: str, home: str) -> str:
    """Where `cli` reads hooks: project scope under the work tree's `top`, user under `home`."""
    project, user = FILES[cli]
    return f"{top}/{project}" if scope == "project" else f"{home}/{user}"


def command(cli: str, event: str, program: str = PROGRAM) -> str:
    return f"{program} hook {cli} {event}"


def _handler(cli: str, event: str, program: str) -> dict[str, Any]:
    timeout = TIMEOUT_S.get(event, DEFAULT_TIMEOUT_S)
    if cli == "copilot":
        return {"type": "command", "bash": command(cli, event, program), "timeoutSec": timeout}
    handler: dict[str, Any] = {"type": "command", "command": command(cli, event, program)}
    if cli == "gemini":
        handler = {"name": NAME_PREFIX + event, **handler, "timeout": timeout * 1000}
    else:
        handler["timeout"] = timeout
    return handler


def entries(cli: str, program: str = PROGRAM) -> dict[str, list[dict[str, Any]]]:
    """The mesh's entries: the CLI's event name -> the groups to add."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event, native in NATIVE[cli].items():
        handler = _handler(cli, event, program)
        if cli == "copilot":
            found[native] = [handler]
            continue
        group: dict[str, Any] = {}
        matcher = MATCHERS[cli].get(event)
        if matcher is not None:
            group["matcher"] = matcher
        group["hooks"] = [handler]
        found[native] = [group]
    return found


def is_ours(handler: Any) -> bool:
    """Whether a handler is one the mesh installed."""
    if not isinstance(handler, dict):
        return False
    text = handler.get("command", handler.get("bash"))
    return isinstance(text, str) and _OURS.search(text.strip()) is not None


def _load(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"not valid JSON ({exc}); fix or move the file, then retry") from exc
    if not isinstance(data, dict):
        raise SettingsError("not a JSON object; fix or move the file, then retry")
    hooks = data.get("hooks")
    if hooks is not None and not isinstance(hooks, dict):
        raise SettingsError('its "hooks" is not an object; fix it, then retry')
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _without_ours(cli: str, hooks: dict[str, Any]) -> dict[str, Any]:
    """`hooks` with the mesh's handlers taken out; a group or event left empty by that is
    dropped, one that was empty before is kept."""
    kept: dict[str, Any] = {}
    for name, groups in hooks.items():
        if not isinstance(groups, list):
            kept[name] = groups
            continue
        new_groups = []
        for group in groups:
            if cli == "copilot":
                if not is_ours(group):
                    new_groups.append(group)
                continue
            inner = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(inner, list):
                new_groups.append(group)
                continue
            rest = [handler for handler in inner if not is_ours(handler)]
            if rest or not inner:
                new_groups.append({**group, "hooks": rest} if len(rest) != len(inner) else group)
        if new_groups or not groups:
            kept[name] = new_groups
    return kept


def install(cli: str, text: str | None, program: str = PROGRAM) -> str:
    """The settings text with the mesh's entries (idempotent; every other entry kept)."""
    data = _load(text)
    hooks = _without_ours(cli, data.get("hooks") or {})
    for name, groups in entries(cli, program).items():
        hooks[name] = [*hooks.get(name, []), *groups]
    if cli == "copilot":
        data = {"version": 1, **data}
    return _dump({**data, "hooks": hooks})


def uninstall(cli: str, text: str | None) -> str | None:
    """The settings text without the mesh's entries; None when nothing else is left."""
    data = _load(text)
    if "hooks" not in data:
        return _dump(data) if data else None
    hooks = _without_ours(cli, data["hooks"])
    if hooks or not data["hooks"]:
        data = {**data, "hooks": hooks}
    else:
        data = {key: value for key, value in data.items() if key != "hooks"}
    if not data or (cli == "copilot" and set(data) <= {"version"}):
        return None
    return _dump(data)


def status(cli: str, text: str | None) -> dict[str, Any]:
    """{installed: every mesh event present, events: {mesh event: present}}."""
    data = _load(text)
    hooks = data.get("hooks") or {}
    present = {}
    for event, native in NATIVE[cli].items():
        groups = hooks.get(native)
        handlers: list[Any] = []
        for group in groups if isinstance(groups, list) else []:
            if cli == "copilot":
                handlers.append(group)
            elif isinstance(group, dict) and isinstance(group.get("hooks"), list):
                handlers += group["hooks"]
        present[event] = any(
            is_ours(handler)
            and str(handler.get("command", handler.get("bash"))).endswith(f" {cli} {event}")
            for handler in handlers
        )
    return {"cli": cli, "installed": all(present.values()), "events": present}


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def codex_trust(hooks_path: str, hooks_text: str | None, config_text: str | None) -> dict[str, Any]:
    """Whether Codex will run the mesh's entries of the hooks file at `hooks_path`.

    Codex runs a non-managed hook only once its definition was reviewed in `/hooks`, which
    records `[hooks.state."<file>:<event>:<group>:<handler>"] trusted_hash = "sha256:..."` in
    `~/.codex/config.toml` (`config_text`); a changed hook needs review again (the hash is
    Codex's own: a recorded hash is reported, not verified). Returns {trusted: all entries
    have a recorded trust, untrusted: [keys without one]}.
    """
    import tomllib

    try:
        config = tomllib.loads(config_text or "")
    except tomllib.TOMLDecodeError:
        config = {}
    state = (
        config.get("hooks", {}).get("state", {}) if isinstance(config.get("hooks"), dict) else {}
    )
    hooks = _load(hooks_text).get("hooks") or {}
    keys = []
    for native, groups in hooks.items():
        for g_index, group in enumerate(groups if isinstance(groups, list) else []):
            inner = group.get("hooks") if isinstance(group, dict) else None
            for h_index, handler in enumerate(inner if isinstance(inner, list) else []):
                if is_ours(handler):
                    event = _SNAKE.sub("_", native).lower()
                    keys.append(f"{hooks_path}:{event}:{g_index}:{h_index}")
    untrusted = [
        key
        for key in keys
        if not (isinstance(state, dict) and isinstance(state.get(key), dict))
        or not state[key].get("trusted_hash")
    ]
    return {"trusted": bool(keys) and not untrusted, "entries": keys, "untrusted": untrusted}


__all__ = ["CLIS", "codex_trust", "entries", "install", "settings_path", "status", "uninstall"]
