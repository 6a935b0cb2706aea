"""Memory amounts as people read them: GiB (2**30 bytes), one precision everywhere.

The terminal (`mesh hw`, `mesh status`, budget refusals and warnings, the watch's lines) and the
dashboard page (`gib` in web/static/app.js and web/render.py, which follow this) show an amount
the same way: at most two decimals, trailing zeros dropped (`1.5`, `0.73`, `80`). JSON keeps the
exact number.
"""

from __future__ import annotations

UNIT = "GiB"


def gib(value: float | None) -> str:
    """`value` GiB as shown: two decimals at most, trailing zeros dropped; `-` for None."""
    if value is None:
        return "-"
    shown = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if shown in ("-0", "") else shown
