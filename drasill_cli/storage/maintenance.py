"""`Maintenance`: upkeep: sweep what killed writers left, report what was quarantined.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class Maintenance(Protocol):
    """upkeep: sweep what killed writers left, report what was quarantined."""
