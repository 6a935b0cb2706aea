"""`AuditLog` contract: append, read (since), latest, follow; the same on every backend."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from drasill_cli import clock
from drasill_cli.storage import Backend


def event(
    kind: str, actor: str | None = "me", *, at: float | None = None, **details: Any
) -> dict[str, Any]:
    return {"time": clock.iso(at), "event": kind, "actor": actor, **details}


def test_an_empty_log_reads_nothing(backend: Backend) -> None:
    assert list(backend.audit_log.read()) == []
    assert backend.audit_log.latest(5) == []


def test_events_read_back_whole_and_in_append_order(backend: Backend) -> None:
    log = backend.audit_log
    log.append(event("register", "alpha", role="lead"))
    log.append(event("send", "alpha", to="beta", id="m1"))
    log.append(event("tick", None, n=3, ok=True, ids=["a", "b"]))
    found = list(log.read())
    assert [e["event"] for e in found] == ["register", "send", "tick"]
    assert found[0]["role"] == "lead"
    assert found[2] == {**found[2], "actor": None, "n": 3, "ok": True, "ids": ["a", "b"]}


def test_since_keeps_events_at_or_after_it(backend: Backend) -> None:
    now = clock.now()
    backend.audit_log.append(event("old", at=now - 3600))
    backend.audit_log.append(event("edge", at=now - 60))
    backend.audit_log.append(event("new", at=now))
    since = clock.parse_iso(clock.iso(now - 60))
    assert [e["event"] for e in backend.audit_log.read(since)] == ["edge", "new"]
    assert list(backend.audit_log.read(now + 3600)) == []


def test_latest_is_newest_first_and_bounded(backend: Backend) -> None:
    for i in range(30):
        backend.audit_log.append(event("tick", seq=i))
    assert [e["seq"] for e in backend.audit_log.latest(5)] == [29, 28, 27, 26, 25]
    assert len(backend.audit_log.latest(100)) == 30
    assert backend.audit_log.latest(0) == []


def test_concurrent_appends_lose_nothing(backend: Backend) -> None:
    def append_many(worker: int) -> None:
        for i in range(50):
            backend.audit_log.append(event("tick", f"w{worker}", seq=i, pad="x" * (i * 7)))

    threads = [threading.Thread(target=append_many, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = [(e["actor"], e["seq"]) for e in backend.audit_log.read()]
    assert sorted(seen) == sorted((f"w{w}", i) for w in range(8) for i in range(50))
    for w in range(8):  # each writer's events stay in its own order
        assert [s for a, s in seen if a == f"w{w}"] == list(range(50))


def test_follow_gives_history_then_new_events_until_stopped(backend: Backend) -> None:
    backend.audit_log.append(event("before"))
    stop = threading.Event()
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    ended = threading.Event()

    def follow() -> None:
        for found in backend.audit_log.follow(stop=stop):
            got.put(found)
        ended.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert got.get(timeout=10)["event"] == "before"
    started = time.monotonic()
    backend.audit_log.append(event("after", seq=1))
    found = got.get(timeout=10)
    assert (found["event"], found["seq"]) == ("after", 1)
    assert time.monotonic() - started < 2.0, "follow is woken by the append, not a slow poll"
    stop.set()
    assert ended.wait(5), "follow returns once stop is set"
    assert got.empty()


def test_follow_since_skips_older_history(backend: Backend) -> None:
    now = clock.now()
    backend.audit_log.append(event("old", at=now - 3600))
    backend.audit_log.append(event("recent", at=now))
    stop = threading.Event()
    got: queue.Queue[str] = queue.Queue()

    def follow() -> None:
        for found in backend.audit_log.follow(now - 60, stop):
            got.put(found["event"])

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert got.get(timeout=10) == "recent"
    stop.set()
    follower.join(10)  # ended before the fixture closes the mesh under it
    assert not follower.is_alive()
