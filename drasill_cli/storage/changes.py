"""`Changes`: waiting for a change in a set of topics, never by a polling loop.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class Changes(Protocol):
    """waiting for a change in a set of topics, never by a polling loop."""
