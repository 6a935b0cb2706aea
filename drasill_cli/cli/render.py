"""Human rendering helpers: what a terminal may be shown, durations and cell widths (the one
table helper is `views.table`)."""

from __future__ import annotations

import re

from drasill_cli import clock

# What a terminal would act on instead of showing: C0 controls but tab and newline, DEL, C1
# controls (U+009B is a CSI by itself), the bidirectional overrides and isolates that reorder a
# line, and lone surrogates (a file name that is not UTF-8).
_ACTIVE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_ACTIVE_OR_BREAK = re.compile(f"[\t\n{_ACTIVE.pattern[1:-1]}]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def printable(text: str, *, lines: bool = True) -> str:
    """`text` as a terminal may show it: every character a terminal would act on (an escape
    sequence, a bell, a carriage return, a bidi override) spelled out (`\\x1b[31m`), so mail,
    titles and names from others can neither colour, move, retitle nor hide anything. Tabs and
    line breaks stay unless `lines` is false. Every human renderer prints through this; JSON
    stays exact."""
    return (_ACTIVE if lines else _ACTIVE_OR_BREAK).sub(_escaped, text)


def span(seconds: float) -> str:
    """`12s`, `5m`, `3h`, `2d`: a duration in its largest whole unit (negative counts as 0)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def since(timestamp: str | None) -> str:
    """`12s`, `5m`, `3h` since an ISO time stamp; `-` for none."""
    if not timestamp:
        return "-"
    return span(clock.now() - clock.parse_iso(timestamp))


def ago(timestamp: str | None) -> str:
    """`12s ago`, `5m ago`, `3h ago` for an ISO time stamp; `-` for none."""
    return f"{since(timestamp)} ago" if timestamp else "-"


def cell_width(text: str) -> int:
    """Terminal columns `text` takes: wide East Asian characters count 2, combining marks 0."""
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )
