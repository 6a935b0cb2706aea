"""`Attachments` for the directory mesh: `attachments/ID/NAME`, one folder per message.

A reader is given the stored file's own path. A broadcast stores the files once: later
recipients' folders hold hard links to the first copy, so each message owns its own links and
dropping one message's folder never breaks another's files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from drasill_cli.backends.directory.layout import ATTACHMENTS_DIR, attachment_folder
from drasill_cli.backends.directory.store import QUARANTINE_DIR, FileStore
from drasill_cli.storage.mailbox import MESSAGE_ID_RE, is_message_id

# A look-up of many message ids (the mailbox's `locator`): the stored message, or None.
Locator = Callable[[str], object]


class DirectoryAttachments:
    def __init__(self, store: FileStore, locator: Callable[[], Locator]) -> None:
        self.store = store
        self.locator = locator  # orphans: whether a message is stored anywhere

    def put(
        self, msg_id: str, files: list[tuple[str, bytes, str]], *, same_as: str | None = None
    ) -> list[dict[str, Any]]:
        """Written (or, with `same_as`, hard-linked) under `attachments/<id>/`. On failure the
        caller drops the message's folder (`drop`)."""
        folder = attachment_folder(msg_id)
        described: list[dict[str, Any]] = []
        for name, data, digest in files:
            rel = f"{folder}/{name}"
            if same_as is None:
                self.store.write_bytes(rel, data)
            else:
                self.store.link(f"{attachment_folder(same_as)}/{name}", rel)
            described.append(
                {
                    "name": name,
                    "path": str(self.store.path(rel)),
                    "size": len(data),
                    "sha256": digest,
                }
            )
        return described

    def local_path(self, msg_id: str, name: str) -> str:
        return str(self.store.path(f"{attachment_folder(msg_id)}/{name}"))

    def drop(self, msg_id: str) -> bool:
        """Delete `attachments/<id>/` and what it holds; False if it was gone or not emptied."""
        if not is_message_id(msg_id):
            return False
        folder = attachment_folder(msg_id)
        for file_name in self.store.names(folder, suffix=""):
            with contextlib.suppress(OSError):  # not a file: the folder stays, and says so below
                self.store.remove(f"{folder}/{file_name}")
        return self.store.remove_dir(folder)

    def orphans(self, older_than: float) -> list[str]:
        """Folders last changed before `older_than` whose message is stored nowhere, not even
        in `quarantine/`: a damaged message keeps its files with it (a quarantined copy's name
        ends with its id)."""
        found = []
        locate = self.locator()
        kept = {
            msg_id
            for name in self.store.names(QUARANTINE_DIR, suffix="")
            for msg_id in MESSAGE_ID_RE.findall(name)
        }
        for msg_id in self.store.subdirs(ATTACHMENTS_DIR):
            if not is_message_id(msg_id) or msg_id in kept:
                continue
            changed = self.store.mtime(attachment_folder(msg_id))
            if changed is not None and changed < older_than and locate(msg_id) is None:
                found.append(msg_id)
        return found
