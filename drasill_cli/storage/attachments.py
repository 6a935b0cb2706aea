"""`Attachments`: files that travel with a message, stored by message id (draft)."""

from __future__ import annotations

from typing import Any, Protocol


class Attachments(Protocol):
    def put(self, msg_id: str, files: list[tuple[str, bytes, str]]) -> list[dict[str, Any]]:
        """Store (name, content, sha256) files for one message; the described attachments
        (`name`, `path`, `size`, `sha256`) for the message record."""
        ...

    def drop(self, msg_id: str) -> bool:
        """Remove one message's attachments; False when there were none."""
        ...

    def orphans(self, older_than: float) -> list[str]:
        """Ids whose attachments belong to no stored message, stored before `older_than`."""
        ...
