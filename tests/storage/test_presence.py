"""The `Presence` contract: agent records and heartbeats, on every backend."""

from __future__ import annotations

import os
import threading
import time

import pytest

from drasill_cli import clock
from drasill_cli.models import AgentRecord
from drasill_cli.storage import Backend
from drasill_cli.storage.presence import REMOVE, Decision
from tests.harness import Harness


def _agent(name: str, **fields: object) -> AgentRecord:
    return AgentRecord.from_record(
        {"name": name, "host": "here", "registered_at": clock.iso(), **fields}
    )


def _register(backend: Backend, name: str, **fields: object) -> AgentRecord | None:
    return backend.presence.change(name, lambda _current: _agent(name, **fields), beat=True)


def test_register_get_and_names(backend: Backend) -> None:
    presence = backend.presence
    assert presence.get("alpha") is None
    assert not presence.is_registered("alpha")
    assert presence.names() == []
    stored = _register(backend, "beta", role="coder")
    _register(backend, "alpha")
    assert stored is not None and stored.role == "coder"
    got = presence.get("beta")
    assert got is not None and got.name == "beta" and got.role == "coder"
    assert presence.is_registered("alpha") and presence.is_registered("beta")
    assert presence.names() == ["alpha", "beta"]


def test_change_decides_on_the_current_record(backend: Backend) -> None:
    presence = backend.presence
    seen: list[AgentRecord | None] = []

    def first(current: AgentRecord | None) -> Decision:
        seen.append(current)
        return _agent("alpha", pid=7)

    presence.change("alpha", first)
    presence.change("alpha", seen.append)  # returns None: keep it as it is
    assert seen[0] is None
    assert seen[1] is not None and seen[1].pid == 7
    kept = presence.get("alpha")
    assert kept is not None and kept.pid == 7


def test_a_failing_decision_writes_nothing(backend: Backend) -> None:
    _register(backend, "alpha", role="before")

    def refuse(current: AgentRecord | None) -> Decision:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        backend.presence.change("alpha", refuse)
    with pytest.raises(RuntimeError):
        backend.presence.change("newcomer", refuse)
    got = backend.presence.get("alpha")
    assert got is not None and got.role == "before"
    assert backend.presence.get("newcomer") is None
    # The exclusion was let go: the next change goes through.
    _register(backend, "alpha", role="after")
    after = backend.presence.get("alpha")
    assert after is not None and after.role == "after"


def test_change_is_exclusive(backend: Backend) -> None:
    """Concurrent read-decide-writes of one agent never lose an update."""
    _register(backend, "alpha", pid=1)
    threads_n, rounds = 6, 5

    def bump(current: AgentRecord | None) -> Decision:
        assert current is not None and current.pid is not None
        time.sleep(0.002)  # widen the window a lost update would need
        return current.replace(pid=current.pid + 1)

    def worker() -> None:
        for _ in range(rounds):
            backend.presence.change("alpha", bump)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = backend.presence.get("alpha")
    assert final is not None and final.pid == 1 + threads_n * rounds


def test_beat_and_last_seen(backend: Backend) -> None:
    presence = backend.presence
    assert presence.last_seen("alpha") is None
    assert presence.beat("alpha") is False, "an unregistered name has no heartbeat"
    assert presence.last_seen("alpha") is None
    backend.presence.change("alpha", lambda _current: _agent("alpha"))  # no beat asked
    before = time.time()
    assert presence.beat("alpha") is True
    seen = presence.last_seen("alpha")
    assert seen is not None and before - 1 <= seen <= time.time() + 1
    _register(backend, "beta")  # registering is a sign of life
    beta = presence.last_seen("beta")
    assert beta is not None and abs(beta - time.time()) < 5


def test_a_future_heartbeat_is_reset_to_now(backend: Backend, harness: Harness) -> None:
    _register(backend, "alpha")
    # What no interface may store (a heartbeat in the future: a clock that stepped back).
    harness.plant_beat(backend, "alpha", time.time() + 3600)
    view = backend.read_only_view().presence
    seen = view.last_seen("alpha")
    assert seen is not None and abs(seen - time.time()) < 5, "a read-only view reads it as now"
    seen = backend.presence.last_seen("alpha")
    assert seen is not None and abs(seen - time.time()) < 5, "it counts as now"
    again = backend.presence.last_seen("alpha")
    assert again is not None and again <= time.time() + 1, "and was stored as now"
    assert view.last_seen("alpha") == again


def test_remove(backend: Backend) -> None:
    presence = backend.presence
    _register(backend, "alpha")
    _register(backend, "beta")
    assert presence.remove("alpha") is True
    assert presence.remove("alpha") is False
    assert presence.get("alpha") is None and not presence.is_registered("alpha")
    assert presence.last_seen("alpha") is None, "the heartbeat goes with the record"
    assert presence.beat("alpha") is False
    assert presence.names() == ["beta"]


def test_remove_as_a_decision(backend: Backend) -> None:
    _register(backend, "alpha")
    assert backend.presence.change("alpha", lambda _current: REMOVE) is None
    assert backend.presence.get("alpha") is None
    assert backend.presence.last_seen("alpha") is None
    assert backend.presence.names() == []


def test_a_record_is_read_with_the_writer_its_storage_proves(backend: Backend) -> None:
    """Who wrote a record comes from the storage, never from the record: a `written_by` in the
    record's content is no proof."""
    _register(backend, "alpha", uid=12345, written_by="forged")
    agent = backend.presence.get("alpha")
    assert agent is not None and agent.writer is not None
    assert agent.writer.uid in (os.geteuid(), None)  # a directory proves the uid; SQL a role
    assert agent.writer.role != "forged"
    assert agent.writer.uid is not None or agent.writer.role is not None
