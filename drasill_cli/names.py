"""Agent name rules, shared by every command that takes a name."""

from __future__ import annotations

import re

from drasill_cli.errors import InvalidInput

AGENT_NAME_MAX = 64  # characters
AGENT_NAME_RE = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{AGENT_NAME_MAX - 1}}}")
RESERVED_NAMES = frozenset({"all"})


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8: no lone surrogate, which is how Python hands
    over bytes that were not UTF-8 (arguments, file names) or a stray JSON escape."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_control_chars(text: str) -> bool:
    """Whether `text` holds an ASCII control character (C0 or DEL): unfit for one-line fields."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_agent_name(name: str, *, allow_all: bool = False) -> str:
    """Return `name` if it is a valid agent name, else raise InvalidInput (exit 2)."""
    if name == "all" and allow_all:
        return name
    if not AGENT_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid agent name {name!a}: use 1 to 64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit",
            code="invalid-name",
        )
    if name in RESERVED_NAMES:
        raise InvalidInput(
            f"agent name {name!r} is reserved (it addresses every agent); pick another name",
            code="reserved-name",
        )
    return name
