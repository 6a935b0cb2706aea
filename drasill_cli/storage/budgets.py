"""`BudgetBook`: hardware enforcement's book: which agents are warned or paused, and since when.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class BudgetBook(Protocol):
    """hardware enforcement's book: which agents are warned or paused, and since when."""
