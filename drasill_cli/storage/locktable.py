"""`LockTable`: the advisory path-lock table, read and changed as a whole under one guard.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class LockTable(Protocol):
    """the advisory path-lock table, read and changed as a whole under one guard."""
