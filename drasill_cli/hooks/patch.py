"""The paths a Codex `apply_patch` call writes, read from the patch text.

The grammar (openai/codex `codex-rs/apply-patch/apply_patch_tool_instructions.md`): a patch
between `*** Begin Patch` and `*** End Patch` holds hunks headed `*** Add File: PATH`,
`*** Update File: PATH` (optionally followed by `*** Move to: NEW`) or `*** Delete File: PATH`.
Paths are relative to the session's cwd; absolute ones are accepted as given. The patch may
arrive as the whole `tool_input.command` string, or inside a shell command form
(`apply_patch <<'EOF' ... EOF`, or an argv list `["apply_patch", PATCH]`): the header lines are
found wherever they are.
"""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^\s*\*\*\* (?:(?:Add|Update|Delete) File|Move to): (.+?)\s*$", re.MULTILINE)


def patch_paths(text: str) -> list[str]:
    """Every path the patch adds, updates, deletes or moves to, in order, once each."""
    seen: dict[str, None] = {}
    for match in _HEADER.finditer(text):
        path = match.group(1)
        if path and "\0" not in path:
            seen.setdefault(path, None)
    return list(seen)


def command_text(command: Any) -> str:
    """The text of a `tool_input.command`: a string as it is, an argv list joined by lines."""
    if isinstance(command, str):
        return command
    if isinstance(command, list):
        return "\n".join(part for part in command if isinstance(part, str))
    return ""
