"""`Presence`: agent records and heartbeats (beat, last seen), register and remove.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class Presence(Protocol):
    """agent records and heartbeats (beat, last seen), register and remove."""
