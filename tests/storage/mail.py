"""Delivering a message in the storage tests: the recipient registered first (a delivery to an
unregistered name is refused), with the audit event `messages.send` gives it."""

from __future__ import annotations

import hashlib
from typing import Any

from drasill_cli import clock
from drasill_cli.models import AgentRecord
from drasill_cli.storage import Backend, auditlog


def message(
    to: str,
    body: str = "hello",
    *,
    sender: str = "alice",
    attachments: list[dict[str, Any]] | None = None,
    msg_id: str | None = None,
) -> dict[str, Any]:
    """A message as `messages.send` makes it (a new id unless one is given)."""
    msg_id = msg_id or clock.new_id("m")
    return {
        "id": msg_id,
        "from": sender,
        "to": to,
        "body": body,
        "priority": "normal",
        "created_at": clock.iso(),
        "reply_to": None,
        "thread": msg_id,
        "attachments": attachments or [],
        "wake": True,
    }


def attached(name: str, data: bytes) -> tuple[str, bytes, str]:
    """A file to attach, as `Attachments.put` takes it: (name, content, sha256)."""
    return name, data, hashlib.sha256(data).hexdigest()


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
