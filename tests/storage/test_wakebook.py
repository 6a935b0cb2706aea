"""`WakeBook` contract: per-agent wake state and the one-watcher guard, on every backend."""

from __future__ import annotations

import pytest

from drasill_cli.storage import Backend
from drasill_cli.storage.wakebook import AlreadyWatching

HOST = "host-a"


def test_state_is_kept_whole_per_agent(backend: Backend) -> None:
    book = backend.wake_book
    assert book.load("alpha") is None
    state = {"state": "queued", "queued_ids": ["m1", "m2"], "attempts": 0, "busy": False}
    book.save("alpha", state)
    book.save("beta", {"state": "woken"})
    assert book.load("alpha") == state
    book.save("alpha", {"state": "consumed"})
    assert book.load("alpha") == {"state": "consumed"}
    assert book.agents() == ["alpha", "beta"]


def test_forget_drops_one_agent_and_tolerates_none(backend: Backend) -> None:
    book = backend.wake_book
    book.save("alpha", {"state": "dead"})
    book.save("beta", {"state": "queued"})
    book.forget("alpha")
    book.forget("alpha")
    book.forget("never-seen")
    assert book.load("alpha") is None
    assert book.agents() == ["beta"]


def test_one_watcher_at_a_time_and_the_refused_learns_who(backend: Backend) -> None:
    book = backend.wake_book
    first = {"pid": 111, "host": HOST, "started_at": "2025-01-01T00:00:00Z"}
    with book.watching(HOST, first):
        with (
            pytest.raises(AlreadyWatching) as refused,
            book.watching(HOST, {"pid": 222, "host": HOST}),
        ):
            pytest.fail("a second watcher got in")
        assert refused.value.holder["pid"] == 111
        assert refused.value.holder["host"] == HOST
        assert refused.value.code == "watch-running"
    with book.watching(HOST, {"pid": 333, "host": HOST}):
        pass  # released when the first left
