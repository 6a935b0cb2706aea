"""Contract: `Changes` on every backend.

A watch collects changes from the moment it is entered (nothing made between a look and the
next wait is lost), names what changed, keeps to its topics, and ends a wait on time, on `stop`.

No storage interface can make a change yet on both backends, so `cause` makes one the way each
backend really does today: on a directory mesh through the feature modules (`messages.send`,
`tasks.add_task`: real file writes), on a PostgreSQL mesh through the backend's own announcement
in a committed transaction (`PostgresChanges.notify`, what every write there will call). Once
the Mailbox and TaskBoard interfaces exist on both, `cause` speaks only them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from drasill_cli.storage import Backend
from drasill_cli.storage.changes import (
    INBOXES,
    MESH,
    STOPPED,
    TASKS,
    TIMEOUT,
    Change,
    inbox,
)
from tests.harness import harness_of

Cause = Callable[[Change], None]  # tests/harness.py: each backend's own way to cause one


@pytest.fixture
def cause(backend: Backend) -> Cause:
    """Makes a change of a topic on `backend` (agents alice, bob and carol exist already)."""
    return harness_of(backend).causer(backend)


def test_a_change_between_entering_and_the_first_wait_is_seen(
    backend: Backend, cause: Cause
) -> None:
    with backend.changes.watch(inbox("bob")) as watch:
        cause(Change(INBOXES, "bob"))  # after entering, before the first wait
        time.sleep(0.2)
        got = watch.next(5)
    assert got == {Change(INBOXES, "bob")}


def test_wait_returns_once_something_changed(backend: Backend, cause: Cause) -> None:
    with backend.changes.watch(TASKS) as watch:
        cause(Change(TASKS))
        started = time.monotonic()
        watch.wait(10)
        assert time.monotonic() - started < 5


def test_the_whole_mesh_topic_sees_an_inbox_change_and_whose(
    backend: Backend, cause: Cause
) -> None:
    with backend.changes.watch(MESH) as watch:
        cause(Change(INBOXES, "bob"))
        got = watch.next(5)
    assert isinstance(got, set)
    assert Change(INBOXES, "bob") in got


def test_an_inbox_watch_ignores_another_inbox(backend: Backend, cause: Cause) -> None:
    with backend.changes.watch(inbox("bob")) as watch:
        cause(Change(INBOXES, "carol"))
        assert watch.next(0.5) == TIMEOUT
        cause(Change(INBOXES, "bob"))
        assert watch.next(5) == {Change(INBOXES, "bob")}


def test_a_task_watch_ignores_mail(backend: Backend, cause: Cause) -> None:
    with backend.changes.watch(TASKS) as watch:
        cause(Change(INBOXES, "bob"))
        assert watch.next(0.5) == TIMEOUT


def test_timeout_returns_timeout_on_time(backend: Backend) -> None:
    with backend.changes.watch(TASKS, inbox("bob")) as watch:
        started = time.monotonic()
        assert watch.next(0.3) == TIMEOUT
        took = time.monotonic() - started
    assert 0.25 <= took < 2


def test_stop_ends_a_wait(backend: Backend) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    with backend.changes.watch(TASKS) as watch:
        started = time.monotonic()
        timer.start()
        try:
            assert watch.next(30, stop) == STOPPED
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5


def test_an_unknown_topic_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        backend.changes.watch("nonsense")
