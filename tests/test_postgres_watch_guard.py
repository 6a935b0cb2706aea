"""`mesh watch`'s guard on a PostgreSQL mesh (one watcher per host) survives a cut session: the
watcher takes its lock again, or stops when another watcher of its host took over meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from drasill_cli import agents, liveness, watcher
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.backends.postgres.wakebook import _HostGuard
from drasill_cli.config import Config
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh
from drasill_cli.storage.wakebook import AlreadyWatching
from tests.conftest import postgres_backend


@pytest.fixture
def two(pg_mesh_url: str) -> Iterator[tuple[PostgresBackend, PostgresBackend]]:
    """Two processes' worth of connections to one mesh."""
    a, b = postgres_backend(pg_mesh_url), postgres_backend(pg_mesh_url)
    yield a, b
    a.close()
    b.close()


def _cut(backend: PostgresBackend, guard: Any) -> None:
    """What a server restart does to the guard's session."""
    assert isinstance(guard, _HostGuard) and guard.conn is not None
    with backend.transaction() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (guard.conn.info.backend_pid,))


def test_a_cut_guard_is_taken_again(two: tuple[PostgresBackend, PostgresBackend]) -> None:
    a, b = two
    with a.wake_book.watching("h1", {"pid": 1, "host": "h1"}) as guard:
        _cut(a, guard)
        guard.confirm()  # taken again on a new session
        with pytest.raises(AlreadyWatching) as refused, b.wake_book.watching("h1", {"pid": 2}):
            pass
        assert refused.value.holder == {"pid": 1, "host": "h1"}
    with b.wake_book.watching("h1", {"pid": 2}):  # released at the end of the block
        pass


def test_a_watcher_stops_when_another_took_over_its_host(
    two: tuple[PostgresBackend, PostgresBackend],
) -> None:
    a, b = two
    mesh = Mesh(a, Config())
    events: list[dict[str, Any]] = []
    outcome: list[BaseException] = []
    host = liveness.hostname()
    with watcher.single_instance(mesh) as guard:
        watch = watcher.Watcher(mesh, events.append, guard)

        def run() -> None:
            try:
                watch.run()
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            _cut(a, guard)
            with b.wake_book.watching(host, {"pid": 424242, "host": host}):
                watch.next_guard_check = 0.0  # due now; a change wakes the watcher to see it
                agents.register(Mesh(b, Config()), "nudge")
                thread.join(20)
        finally:
            watch.stop()
            thread.join(20)
    assert not thread.is_alive()
    [stopped] = outcome
    assert isinstance(stopped, NegativeOutcome) and stopped.code == "watch-running"
    assert "took over" in stopped.message and "424242" in stopped.message
    assert any(e.get("job") == "guard" for e in events)
