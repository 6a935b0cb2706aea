"""One error hierarchy for the whole core; the CLI maps it to exit codes in one place.

Every error carries a kebab-case `code` (stable, for scripts), a message that says what went
wrong and what to do next, and the contract's exit code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MeshError(Exception):
    """Base of every error the core raises on purpose."""

    exit_code: ClassVar[int] = 1
    default_code: ClassVar[str] = "mesh-error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = details

    def to_json(self) -> dict[str, Any]:
        """The `{"error": {...}}` object of the contract, with any extra details."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class NegativeOutcome(MeshError):
    """Not a fault: inbox empty, wait timed out, claim lost, lock or budget denied (exit 1)."""

    exit_code = 1
    default_code = "negative-outcome"


class OrdinaryOutcome(NegativeOutcome):
    """An exit-1 outcome that is an ordinary state, not a problem: nothing to claim, a wait that
    ran out. Shown as one plain line, without the `error:` prefix (JSON is unchanged)."""

    default_code = "ordinary-outcome"


class InvalidInput(MeshError):
    """Invalid usage or input; nothing was written (exit 2)."""

    exit_code = 2
    default_code = "invalid-input"


class NotFound(MeshError):
    """Unknown agent, task, message or lock (exit 3)."""

    exit_code = 3
    default_code = "not-found"


class MeshUnusable(MeshError):
    """Unsafe permissions or owner, or a store damaged beyond repair (exit 4)."""

    exit_code = 4
    default_code = "mesh-unusable"
