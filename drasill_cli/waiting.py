"""What every command that waits shares (inbox, claim, lock, log --follow, ...): the one check
of a `--wait` value, and `enduring`, which carries an operation across a lost store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from drasill_cli.errors import InvalidInput, StoreUnreachable

if TYPE_CHECKING:
    import threading

T = TypeVar("T")

# The first pause before trying again after a lost store, doubled up to the last.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


def check_wait(seconds: float, until: str | None = None) -> None:
    """Refuse (exit 2, `invalid-wait`) a wait that is not zero or more seconds; NaN is refused
    too. `until` says what an infinite wait lasts for (`inf: until mail arrives`), when the
    command takes one."""
    if not seconds >= 0:  # nan compares false; inf is a wait with no limit
        inf = f" (inf: {until})" if until else ""
        raise InvalidInput(
            f"--wait must be zero or more seconds{inf}, got {seconds}", code="invalid-wait"
        )


def enduring(call: Callable[[], T], patience: float, stop: threading.Event | None = None) -> T:
    """`call()`, tried again with backoff while the store cannot be reached (`StoreUnreachable`:
    a database server restarting), for up to `patience` seconds from the first failure
    (`[store] reconnect_timeout`); then, or once `stop` is set, the last failure leaves, said
    once. A connection cut while a statement runs may have cut it after its commit, before its
    answer: only for reads, and writes whose second run does no harm (a renewal, a release,
    a heartbeat) or that the backend makes idempotent."""
    give_up_at: float | None = None
    pause = RETRY_FIRST_S
    while True:
        try:
            return call()
        except StoreUnreachable as exc:
            now = time.monotonic()
            if give_up_at is None:
                give_up_at = now + patience
            left = give_up_at - now
            if left <= 0 or (stop is not None and stop.is_set()):
                raise gave_up(exc, patience) from None
            wait = min(pause, left)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            pause = min(pause * 2, RETRY_MAX_S)


def gave_up(exc: StoreUnreachable, patience: float) -> StoreUnreachable:
    """`exc`, saying how long it was tried again (the one line a waiting command ends with)."""
    if patience <= 0 or "[store] reconnect_timeout" in exc.message:
        return exc
    return StoreUnreachable(
        f"{exc.message} (still so after trying again for {patience:g} s, "
        "[store] reconnect_timeout)",
        code=exc.code,
        **exc.details,
    )
