"""`WakeBook`: mesh watch's bookkeeping: one watcher per mesh (per host), per-agent wake state.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class WakeBook(Protocol):
    """mesh watch's bookkeeping: one watcher per mesh (per host), per-agent wake state."""
