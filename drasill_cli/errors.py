"""One error hierarchy for the whole core; the CLI maps it to exit codes in one place.

Every error carries a kebab-case `code` (stable, for scripts), a message that says what went
wrong and what to do next, and the contract's exit code.
"""

from __future__ import annotations

import errno
from pathlib import Path
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


class NotRegistered(NotFound):
    """Claiming, locking or moving a claimed task as a name that is not a registered agent
    (exit 3): a mistyped name would hold work that nothing ever takes back."""

    default_code = "not-registered"


class MeshUnusable(MeshError):
    """Unsafe permissions or owner, or a store damaged beyond repair (exit 4)."""

    exit_code = 4
    default_code = "mesh-unusable"


class StoreUnreachable(MeshUnusable):
    """The store's server cannot be reached right now: the connection was lost, or connecting
    failed (a database server restarting). Exit 4; a waiting command tries again for a while
    first (`drasill_cli.waiting.enduring`)."""

    default_code = "store-unreachable"


class StoreFull(MeshError):
    """The file system refused a write (full disk, quota, read-only): nothing was written."""

    exit_code = 4
    default_code = "store-write-failed"


class Busy(MeshError):
    """A record stayed locked by another process past the timeout (exit 1)."""

    exit_code = 1
    default_code = "busy"


# errno -> (what happened, what to do); the one place that turns a failed file operation
# into an error a person or agent can act on.
_IO_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free disk space"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space within your quota"),
    errno.EROFS: (
        "the file system is read-only",
        "remount it read-write or choose another --mesh-dir",
    ),
    errno.EIO: ("an I/O error occurred", "check the disk (dmesg) and run `mesh doctor`"),
    errno.EPERM: (
        "the operation is not permitted (an immutable file or folder?)",
        "check with `lsattr -d` and clear it with `chattr -i`, or run `mesh doctor`",
    ),
    errno.EACCES: (
        "permission is denied",
        "check the owner and mode of the mesh directory with `mesh doctor`",
    ),
    errno.EMFILE: ("too many files are open", "raise the open-file limit (ulimit -n)"),
}


def io_error(action: str, target: str | Path, exc: OSError) -> MeshError:
    """The store error (exit 4) for a failed file operation: the cause and the fix, one line."""
    cause, fix = _IO_CAUSES.get(
        exc.errno or 0, (exc.strerror or str(exc), "check the mesh directory with `mesh doctor`")
    )
    kind = StoreFull if exc.errno in (errno.ENOSPC, errno.EDQUOT) else MeshUnusable
    code = "store-write-failed" if action in _WRITES else "store-read-failed"
    return kind(
        f"could not {action} {target}: {cause}; {fix}, then run the command again", code=code
    )


_WRITES = frozenset({"write", "remove", "move", "create the folder", "lock"})
