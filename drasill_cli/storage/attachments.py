"""`Attachments`: the files that travel with a message, kept by message id and file name.

A stored message names its attachments (`name`, `size`, `sha256`); where a reader finds the
bytes is the backend's answer at read time (`local_path`): the directory mesh gives the stored
file itself, a database backend copies the content into a private cache on the reading host
and gives that copy. A reader only ever sees a local file path.
"""

from __future__ import annotations

from typing import Any, Protocol

from drasill_cli.names import has_control_chars

# File names are at most 255 bytes, and the directory mesh writes through a longer temp name.
MAX_ATTACHMENT_NAME_BYTES = 200


def is_attachment_name(name: str) -> bool:
    """A plain file name: no folder part, no control character, not `.` or `..`, short."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and not has_control_chars(name)
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_ATTACHMENT_NAME_BYTES
    )


class Attachments(Protocol):
    def put(
        self, msg_id: str, files: list[tuple[str, bytes, str]], *, same_as: str | None = None
    ) -> list[dict[str, Any]]:
        """Store (name, content, sha256) files for message `msg_id`, durable when this returns;
        the attachments as the message record describes them (`name`, `path`, `size`,
        `sha256`). `same_as`: a message of the same send that already holds these very files
        (a broadcast), so the backend may share the content instead of storing it again. Each
        message still owns its attachments: dropping one never touches another's."""
        ...

    def local_path(self, msg_id: str, name: str) -> str:
        """A local file holding attachment `name` of message `msg_id`, for a reader (the path
        may name nothing once the attachment was dropped)."""
        ...

    def drop(self, msg_id: str) -> bool:
        """Remove one message's attachments; False when there were none (or they stayed)."""
        ...

    def orphans(self, older_than: float) -> list[str]:
        """Ids whose attachments belong to no stored message, stored before `older_than`
        (epoch seconds): a sender killed between storing them and delivering left them."""
        ...
