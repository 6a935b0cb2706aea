"""`WakeBook` contract: per-agent wake state and the one-watcher guard, on every backend."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from drasill_cli.storage import Backend
from drasill_cli.storage.wakebook import AlreadyWatching
from tests.harness import Harness

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


def _other_host_may_watch(backend: Backend) -> bool:
    """A database mesh spans machines: one watcher per host. A directory mesh lives on one
    machine: one watcher per mesh directory, whatever host is named (the registry's
    `spans_hosts`)."""
    from drasill_cli.backends import entry_of_kind

    return entry_of_kind(backend.kind).spans_hosts


def test_watchers_of_different_hosts(backend: Backend) -> None:
    book = backend.wake_book
    with book.watching("host-a", {"pid": 1, "host": "host-a"}):
        if not _other_host_may_watch(backend):
            with (
                pytest.raises(AlreadyWatching) as refused,
                book.watching("host-b", {"pid": 2, "host": "host-b"}),
            ):
                pytest.fail("a second watcher of one mesh directory got in")
            assert refused.value.holder["pid"] == 1
            return
        with book.watching("host-b", {"pid": 2, "host": "host-b"}):
            for host, holder in (("host-a", 1), ("host-b", 2)):
                with (
                    pytest.raises(AlreadyWatching) as refused,
                    book.watching(host, {"pid": 3, "host": host}),
                ):
                    pytest.fail(f"a second watcher on {host} got in")
                assert refused.value.holder == {"pid": holder, "host": host}
        with book.watching("host-b", {"pid": 4, "host": "host-b"}):
            pass  # host-b's watcher left: the next one there gets in while host-a still runs


HOLD = """
import time
{reopen}
with backend.wake_book.watching("host-a", {"pid": 99, "host": "host-a"}):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_killed_watcher_never_blocks_the_next(backend: Backend, harness: Harness) -> None:
    script = HOLD.replace("{reopen}", harness.reopen_source())
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with (
            pytest.raises(AlreadyWatching) as refused,
            backend.wake_book.watching("host-a", {"pid": 1, "host": "host-a"}),
        ):
            pytest.fail("got in while another process watched")
        assert refused.value.holder["pid"] == 99
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the server notices the dropped connection at once on a local socket
        try:
            with backend.wake_book.watching("host-a", {"pid": 1, "host": "host-a"}):
                return
        except AlreadyWatching:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
