"""The one check of a `--wait` value, for every command that waits (inbox, claim, lock, ...)."""

from __future__ import annotations

from drasill_cli.errors import InvalidInput


def check_wait(seconds: float, until: str | None = None) -> None:
    """Refuse (exit 2, `invalid-wait`) a wait that is not zero or more seconds; NaN is refused
    too. `until` says what an infinite wait lasts for (`inf: until mail arrives`), when the
    command takes one."""
    if not seconds >= 0:  # nan compares false; inf is a wait with no limit
        inf = f" (inf: {until})" if until else ""
        raise InvalidInput(
            f"--wait must be zero or more seconds{inf}, got {seconds}", code="invalid-wait"
        )
