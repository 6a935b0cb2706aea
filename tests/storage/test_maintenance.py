"""`Maintenance` contract: sweep and the store's own diagnosis, on every backend."""

from __future__ import annotations

from drasill_cli import clock
from drasill_cli.storage import Backend

STATUSES = {"ok", "warn", "fail"}


def test_a_new_mesh_has_nothing_to_sweep(backend: Backend) -> None:
    later = clock.now() + 3600
    assert backend.maintenance.sweep(later, apply=False) == []
    assert backend.maintenance.sweep(later) == []


def test_sweep_leaves_what_complete_writes_made(backend: Backend) -> None:
    backend.audit_log.append({"time": clock.iso(), "event": "tick", "actor": None})
    backend.wake_book.save("alpha", {"state": "queued"})
    backend.maintenance.sweep(clock.now() + 3600)
    assert backend.wake_book.load("alpha") == {"state": "queued"}
    assert [e["event"] for e in backend.audit_log.read()] == ["tick"]


def test_check_of_a_sound_mesh_finds_no_failure(backend: Backend) -> None:
    found = backend.maintenance.check()
    assert found, "the store reports at least whether it is usable"
    assert all(f.status in STATUSES for f in found)
    assert [f for f in found if f.status == "fail"] == []
    backend.wake_book.save("alpha", {"state": "queued"})
    backend.audit_log.append({"time": clock.iso(), "event": "tick", "actor": None})
    after = backend.maintenance.check()
    assert [f for f in after if f.status == "fail"] == []
    assert all(f.name and f.detail for f in after)
