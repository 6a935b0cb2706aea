"""The rules every backend applies to a stored record have one definition (`models`), and the
plain checks of the hot path agree with the pydantic models of import/export."""

from __future__ import annotations

from pathlib import Path

import pytest

import drasill_cli
from drasill_cli import clock, models
from drasill_cli.models import RecordError

NOW = clock.iso()
PACKAGE = Path(drasill_cli.__file__).parent


def test_a_stored_agent_must_be_an_agent_record_of_its_own_name() -> None:
    raw = {"name": "alice", "host": "h", "registered_at": NOW}
    assert models.stored_agent("alice", raw).name == "alice"
    with pytest.raises(RecordError, match="holds agent 'alice', not 'bob'"):
        models.stored_agent("bob", raw)
    with pytest.raises(RecordError, match="is not an agent record: it lacks host"):
        models.stored_agent("alice", {"name": "alice", "registered_at": NOW})


def test_a_stored_task_must_hold_its_own_id() -> None:
    raw = {"id": "t-0001", "title": "x", "state": "queued", "created_at": NOW, "updated_at": NOW}
    assert models.stored_task("t-0001", raw).id == "t-0001"
    with pytest.raises(RecordError, match="holds task 't-0001', not 't-0002'"):
        models.stored_task("t-0002", raw)


@pytest.mark.parametrize("said", ["holds agent ", "holds task ", "is not an agent record"])
def test_no_backend_carries_its_own_copy_of_the_record_checks(said: str) -> None:
    copies = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "backends").rglob("*.py"))
        if said in path.read_text(encoding="utf-8")
    ]
    assert copies == [], f"{said!r} is checked outside models.py: {copies}"


def test_one_builder_makes_the_message_items_of_every_backend() -> None:
    from drasill_cli.storage.transfer import message_items

    sent = {"id": "m-2", "to": "bob", "via": "sent"}
    copy = {"id": "m-2", "to": "bob", "via": "inbox"}
    only_sent = {"id": "m-1", "to": "carol"}
    items = list(message_items([("sent", sent), ("read", copy), ("sent", only_sent)]))
    assert items == [
        {"kind": "message", "message": only_sent, "state": None, "sent": True},
        {"kind": "message", "message": copy, "state": "read", "sent": True},
    ]
    copies = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "backends").rglob("*.py"))
        if '"kind": "message"' in path.read_text(encoding="utf-8")
    ]
    assert copies == [], f"message items built outside storage.transfer: {copies}"
