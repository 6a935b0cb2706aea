"""Delivering a message in the storage tests: the recipient registered first (a delivery to an
unregistered name is refused), with the audit event `messages.send` gives it."""

from __future__ import annotations

from typing import Any

from drasill_cli import clock
from drasill_cli.models import AgentRecord
from drasill_cli.storage import Backend, auditlog


def register(backend: Backend, name: str) -> None:
    """Give `name` an agent record unless it has one."""

    def keep_or_make(current: AgentRecord | None) -> AgentRecord | None:
        if current is not None:
            return None  # keep it as it is
        return AgentRecord.from_record({"name": name, "host": "here", "registered_at": clock.iso()})

    backend.presence.change(name, keep_or_make, beat=True)


def deliver(backend: Backend, message: dict[str, Any]) -> None:
    """Deliver `message` to its recipient, registered first when it was not."""
    register(backend, message["to"])
    assert backend.mailbox.deliver(
        message, auditlog.event("send", message["from"], id=message["id"], to=message["to"])
    )
