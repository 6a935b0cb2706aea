"""Human rendering helpers: what a terminal may be shown, durations, and plain tables that never
break an id or a path."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

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


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap; a word longer than `width` (a path, an id) stays whole on its line."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and cell_width(line) + 1 + cell_width(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line or not lines else lines


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    wrap: Sequence[str] = (),
) -> None:
    """Print a table on stdout, fitted to the terminal width (80 when piped, or $COLUMNS).

    Cells are never broken inside a word, so ids and paths stay whole and copyable at any
    width: only the columns named in `wrap` (free text such as titles) wrap, between words,
    when the table is too wide; a row that still does not fit is left long, not cut.
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
    gap = 2
    room = shutil.get_terminal_size((80, 24)).columns
    flexible = [i for i, column in enumerate(columns) if column in wrap]
    excess = sum(widths) + gap * (len(columns) - 1) - room
    if excess > 0 and flexible:
        fixed = sum(w for i, w in enumerate(widths) if i not in flexible)
        share = max(0, room - fixed - gap * (len(columns) - 1)) // len(flexible)
        for i in flexible:
            floor = max(
                [cell_width(columns[i])]
                + [cell_width(word) for row in texts for word in row[i].split()]
            )
            widths[i] = min(widths[i], max(share, floor))
    out = [printable(title)] if title else []
    for cells in [list(columns), *texts]:
        wrapped = [
            _wrap(cell, widths[i]) if i in flexible else [cell] for i, cell in enumerate(cells)
        ]
        for depth in range(max(len(lines) for lines in wrapped)):
            parts = []
            for i, lines in enumerate(wrapped):
                text = lines[depth] if depth < len(lines) else ""
                parts.append(text + " " * (widths[i] - cell_width(text)))
            out.append((" " * gap).join(parts).rstrip())
    sys.stdout.write("\n".join(out) + "\n")
