"""Contract: `LockTable` (the path-lock table, changed whole under one guard), on every backend."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from drasill_cli import SCHEMA_VERSION, clock
from drasill_cli.storage import Backend
from drasill_cli.storage.locktable import LockChanges
from tests.harness import Harness, harness_of

Table = list[dict[str, Any]]


def lock(
    path: str, holder: str = "alpha", mode: str = "write", ttl: float = 60.0
) -> dict[str, Any]:
    now = clock.now()
    return {
        "schema_version": SCHEMA_VERSION,
        "path": path,
        "mode": mode,
        "holder": holder,
        "acquired_at": clock.iso(now),
        "expires_at": clock.iso(now + ttl),
        "ttl": ttl,
    }


def keys(table: Table) -> set[tuple[str, str]]:
    return {(entry["path"], entry["holder"]) for entry in table}


def test_an_empty_table(backend: Backend) -> None:
    assert backend.locks.all() == []
    assert backend.locks.transact(lambda table: LockChanges(len(table))) == 0


def test_put_replace_and_remove(backend: Backend) -> None:
    table = backend.locks
    seen = table.transact(
        lambda t: LockChanges(list(t), put=[lock("/a"), lock("/a", "beta", "read"), lock("/b")])
    )
    assert seen == []
    assert keys(table.all()) == {("/a", "alpha"), ("/a", "beta"), ("/b", "alpha")}
    table.transact(lambda t: LockChanges(None, put=[lock("/a", mode="read", ttl=5.0)]))
    [mine] = [
        entry for entry in table.all() if entry["path"] == "/a" and entry["holder"] == "alpha"
    ]
    assert (mine["mode"], mine["ttl"]) == ("read", 5.0)
    assert len(table.all()) == 3  # replaced, not added

    def drop_a(t: Table) -> LockChanges[Table]:
        gone = [e for e in t if e["path"] == "/a"]
        return LockChanges(gone, remove=gone)

    assert keys(table.transact(drop_a)) == {("/a", "alpha"), ("/a", "beta")}
    assert keys(table.all()) == {("/b", "alpha")}
    # Removing a lock that is not there is no error.
    table.transact(lambda t: LockChanges(None, remove=[lock("/gone")]))
    assert keys(table.all()) == {("/b", "alpha")}


def test_records_come_back_whole(backend: Backend) -> None:
    stored = {**lock("/with space/é"), "extra": {"kept": True}}
    backend.locks.transact(lambda t: LockChanges(None, put=[stored]))
    assert backend.locks.all() == [stored]


def test_a_failing_decision_changes_nothing(backend: Backend) -> None:
    backend.locks.transact(lambda t: LockChanges(None, put=[lock("/a")]))

    def decide(table: Table) -> LockChanges[None]:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        backend.locks.transact(decide)
    assert keys(backend.locks.all()) == {("/a", "alpha")}


def test_damaged_records_are_never_returned(backend: Backend, harness: Harness) -> None:
    backend.locks.transact(lambda t: LockChanges(None, put=[lock("/a")]))
    harness.plant_damaged_lock(backend)  # what no interface may store
    seen = backend.locks.transact(lambda t: LockChanges(list(t)))
    assert keys(seen) == {("/a", "alpha")}
    assert keys(backend.locks.all()) == {("/a", "alpha")}
    assert any("quarantined" in warning for warning in backend.warnings)


def _append_one(table: Table) -> LockChanges[None]:
    """Put a lock named after the table's size: two decisions that see the same table write
    the same lock, so any interleaving loses a count."""
    size = len(table)
    time.sleep(0.002)  # widen the window between the read and the write
    return LockChanges(None, put=[lock(f"/counter/{size}")])


def test_transact_is_exclusive_between_threads(backend: Backend) -> None:
    threads, rounds = 8, 10
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(rounds):
                backend.locks.transact(_append_one)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    assert errors == []
    assert len(backend.locks.all()) == threads * rounds


WORKER = """
import time
from drasill_cli import SCHEMA_VERSION, clock
from drasill_cli.storage.locktable import LockChanges
from tests.harness import Harness, harness_of
{reopen}
def append(table):
    size = len(table)
    time.sleep(0.002)
    now = clock.now()
    entry = {{"schema_version": SCHEMA_VERSION, "path": f"/counter/{{size}}", "mode": "write",
             "holder": "alpha", "acquired_at": clock.iso(now),
             "expires_at": clock.iso(now + 60), "ttl": 60.0}}
    return LockChanges(None, put=[entry])
for _ in range({rounds}):
    backend.locks.transact(append)
"""


def _race(backend: Backend, template: str, processes: int, rounds: int) -> None:
    """Run `processes` copies of the worker `template` on the mesh at once; each must succeed."""
    backend.locks.transact(lambda t: LockChanges(None))  # the mesh exists before they start
    script = template.format(reopen=harness_of(backend).reopen_source(), rounds=rounds)
    workers = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for worker in workers:
        _out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err


def test_transact_is_exclusive_between_processes(backend: Backend) -> None:
    processes, rounds = 4, 10
    _race(backend, WORKER, processes, rounds)
    assert len(backend.locks.all()) == processes * rounds


def test_a_read_only_view_may_decide_but_not_change(backend: Backend) -> None:
    backend.locks.transact(lambda t: LockChanges(None, put=[lock("/a")]))
    view = backend.read_only_view()
    assert keys(view.locks.transact(lambda t: LockChanges(list(t)))) == {("/a", "alpha")}
    with pytest.raises(RuntimeError):
        view.locks.transact(lambda t: LockChanges(None, remove=list(t)))
    assert keys(backend.locks.all()) == {("/a", "alpha")}


COUNTER = """
import time
from drasill_cli import SCHEMA_VERSION, clock
from drasill_cli.storage.locktable import LockChanges
from tests.harness import Harness, harness_of
{reopen}
def increment(table):
    [held] = [e for e in table if e["path"] == "/counter"] or [None]
    count = held["count"] if held else 0
    time.sleep(0.001)  # widen the window between the read and the write
    now = clock.now()
    entry = {{"schema_version": SCHEMA_VERSION, "path": "/counter", "mode": "write",
             "holder": "alpha", "acquired_at": clock.iso(now),
             "expires_at": clock.iso(now + 60), "ttl": 60.0, "count": count + 1}}
    return LockChanges(count, put=[entry])
for _ in range({rounds}):
    backend.locks.transact(increment)
"""


def test_racing_increments_of_one_record_lose_nothing(backend: Backend) -> None:
    """8 processes each increment one lock record's counter 20 times: every increment reads
    the value the previous one wrote (no lost update)."""
    processes, rounds = 8, 20
    _race(backend, COUNTER, processes, rounds)
    [counter] = backend.locks.all()
    assert counter["count"] == processes * rounds
