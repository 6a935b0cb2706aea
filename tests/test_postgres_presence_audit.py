"""PostgreSQL specifics of Presence and AuditLog beyond the contract suite: registrations of one
new name from separate connections decide one after the other; the audit log never keeps the
URL's password and reads its newest events by index."""

from __future__ import annotations

import threading
from typing import Any

from drasill_cli import clock
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.models import AgentRecord
from drasill_cli.storage.presence import Decision
from tests import pg_cluster
from tests.conftest import postgres_backend


def test_registrations_of_one_new_name_from_many_connections_decide_in_turn(
    pg_mesh_url: str,
) -> None:
    """Each process has its own connection: without the name's advisory lock, several would
    find no row and each would register, the last one silently winning."""
    backends = [postgres_backend(pg_mesh_url) for _ in range(8)]
    saw_none: list[int] = []
    start = threading.Barrier(len(backends))

    def register(i: int, backend: PostgresBackend) -> None:
        def decide(current: AgentRecord | None) -> Decision:
            if current is not None:
                return None  # taken: keep the first
            saw_none.append(i)
            return AgentRecord.from_record(
                {"name": "newbie", "host": f"h{i}", "pid": i + 1, "registered_at": clock.iso()}
            )

        start.wait()
        backend.presence.change("newbie", decide, beat=True)

    threads = [threading.Thread(target=register, args=(i, b)) for i, b in enumerate(backends)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(saw_none) == 1, f"{len(saw_none)} registrations found the name free"
        kept = backends[0].presence.get("newbie")
        assert kept is not None and kept.pid == saw_none[0] + 1
    finally:
        for backend in backends:
            backend.close()


def test_the_audit_log_never_keeps_the_password(pg_mesh_url: str) -> None:
    url = pg_mesh_url.replace("mesh@", f"{pg_cluster.PASSWORD_ROLE}:{pg_cluster.PASSWORD}@", 1)
    backend = postgres_backend(url)
    try:
        event: dict[str, Any] = {"time": clock.iso(), "event": "connect", "actor": None}
        backend.audit_log.append({**event, "url": url, "note": f"pw {pg_cluster.PASSWORD}"})
        with backend.transaction() as cur:
            cur.execute("SELECT details::text, host FROM mesh_audit")
            rows = cur.fetchall()
        assert len(rows) == 1 and pg_cluster.PASSWORD not in rows[0][0]
        assert rows[0][1]  # the host that appended it
        found = next(iter(backend.audit_log.read()))
        assert found["url"] == backend.location and "***" in found["note"]
    finally:
        backend.close()


def test_latest_reads_by_index(pg_mesh_url: str) -> None:
    backend = postgres_backend(pg_mesh_url)
    try:
        for i in range(300):
            backend.audit_log.append({"time": clock.iso(), "event": "tick", "actor": None, "n": i})
        with backend.transaction() as cur:
            cur.execute("ANALYZE mesh_audit")
            cur.execute("EXPLAIN SELECT details FROM mesh_audit ORDER BY seq DESC LIMIT 5")
            plan = "\n".join(row[0] for row in cur.fetchall())
        assert "Index Scan Backward" in plan and "Seq Scan" not in plan, plan
        assert [e["n"] for e in backend.audit_log.latest(3)] == [299, 298, 297]
    finally:
        backend.close()
