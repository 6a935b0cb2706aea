"""Human rendering helpers; rich is imported only here, and only when a table is drawn."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from drasill_cli import clock


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


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table on stdout, fitted to the terminal (readable at 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", expand=False, box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("-" if cell is None else str(cell) for cell in row))
    Console(file=sys.stdout, highlight=False, soft_wrap=False).print(grid)
