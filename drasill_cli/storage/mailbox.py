"""`Mailbox`: every agent's mail, in the words of mail (draft: the messages work refines it).

A message is a dict that passed `models.MessageRecord.check` (keys of the contract's message
object). The backend owns where and how mail is kept (maildir shards, rows); the feature module
`messages.py` owns the rules (who may send, bodies, replies, broadcast).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Mailbox(Protocol):
    def deliver(self, message: dict[str, Any]) -> None:
        """Make `message` unread for `message["to"]` and keep it in its sender's history; durable
        when this returns. Exactly once: a killed sender delivers whole or not at all."""
        ...

    def has_mailbox(self, agent: str) -> bool:
        """Whether `agent` ever had a mailbox (mail to an unregistered name is still readable)."""
        ...

    def take_next(self, agent: str) -> dict[str, Any] | None:
        """Mark the next unread message (urgent first, then oldest) read and return it; of any
        number of concurrent takers exactly one gets each message."""
        ...

    def unread(self, agent: str) -> Iterator[dict[str, Any]]:
        """Unread messages in take order, left unread (lazily: `peek` is the first)."""
        ...

    def unread_count(self, agent: str) -> int: ...

    def history(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Messages `agent` sent or took, newest first."""
        ...

    def archived(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Unread mail archived when `agent` was removed, newest first."""
        ...

    def find(self, msg_id: str) -> dict[str, Any] | None:
        """The message with this id wherever it is (sent, unread, read, archived)."""
        ...

    def archive(self, agent: str) -> list[str]:
        """Move `agent`'s unread mail to its archive (never deleted); ids of those moved."""
        ...

    def expire_history(self, cutoff: float, *, apply: bool = True) -> list[str]:
        """Sent and read copies created before `cutoff` (epoch seconds): removed with `apply`,
        only listed without. Unread and archived mail never expires."""
        ...
