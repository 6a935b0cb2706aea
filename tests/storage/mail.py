"""Delivering a message in the storage tests, with the audit event `messages.send` gives it."""

from __future__ import annotations

from typing import Any

from drasill_cli.storage import Backend, auditlog


def deliver(backend: Backend, message: dict[str, Any]) -> None:
    backend.mailbox.deliver(
        message, auditlog.event("send", message["from"], id=message["id"], to=message["to"])
    )
