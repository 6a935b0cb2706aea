"""`AuditLog`: the audit trail: append one event, read since a time, follow.

Draft: the work that moves this domain behind the boundary defines its operations.
"""

from __future__ import annotations

from typing import Protocol


class AuditLog(Protocol):
    """the audit trail: append one event, read since a time, follow."""
