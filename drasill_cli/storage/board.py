"""`TaskBoard`: add, change one task under its exclusion, the queue and held-by indexes.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class TaskBoard(Protocol):
    """the task board: add, change one task under its exclusion, the queue and held-by indexes."""
