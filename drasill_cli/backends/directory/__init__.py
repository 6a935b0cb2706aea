"""The directory mesh: every storage interface on files in one directory, no server.

Everything file-shaped lives in this package and nowhere else: the record files and folders,
the maildir layout, the task queue and held markers, mtime heartbeats, sidecar flocks,
`staging/` and `quarantine/`, and watchfiles waits. `store.py` is the package's file primitive
(`FileStore`: atomic writes, O_NOFOLLOW, flocks, quarantine); the modules beside it implement
the interfaces of `drasill_cli.storage` on top of it, each in the mesh's own words.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.directory.store import MAX_RECORD_BYTES, FileStore
from drasill_cli.storage.auditlog import append_or_warn

if TYPE_CHECKING:
    from drasill_cli.backends.directory.attachments import DirectoryAttachments
    from drasill_cli.backends.directory.auditlog import DirectoryAuditLog
    from drasill_cli.backends.directory.board import DirectoryBoard
    from drasill_cli.backends.directory.budgets import DirectoryBudgetBook
    from drasill_cli.backends.directory.changes import DirectoryChanges
    from drasill_cli.backends.directory.locktable import DirectoryLockTable
    from drasill_cli.backends.directory.mailbox import DirectoryMailbox
    from drasill_cli.backends.directory.maintenance import DirectoryMaintenance
    from drasill_cli.backends.directory.presence import DirectoryPresence
    from drasill_cli.backends.directory.transfer import DirectoryTransfer
    from drasill_cli.backends.directory.wakebook import DirectoryWakeBook
    from drasill_cli.config import Config


def _record_limit(config: Config) -> int:
    """The largest record file read: a message may carry a body of `max_body_bytes`."""
    return max(MAX_RECORD_BYTES, 8 * config.messages.max_body_bytes)


class DirectoryBackend:
    """A mesh directory: a `FileStore` and the interfaces built on it (made on first use)."""

    kind = "directory"

    def __init__(self, store: FileStore, config: Config) -> None:
        self.store = store
        self.config = config

    @classmethod
    def open(cls, root: Path, config: Config) -> DirectoryBackend:
        store = FileStore.open(
            root,
            group_shared=config.group_shared,
            fsync=config.store.fsync,
            max_record_bytes=_record_limit(config),
        )
        return cls(store, config)

    @classmethod
    def inspect(cls, root: Path, config: Config) -> DirectoryBackend:
        """The mesh at `root` as it is, read-only, with nothing checked or refused: `mesh
        doctor` diagnoses (`maintenance.check`) what `open` would refuse."""
        store = FileStore(
            root,
            group_shared=config.group_shared,
            fsync=config.store.fsync,
            max_record_bytes=_record_limit(config),
        )
        return cls(store.read_only_view(), config)

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def location(self) -> str:
        return str(self.store.root)

    @property
    def warnings(self) -> list[str]:
        return self.store.warnings

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    def exists(self) -> bool:
        return self.store.root.is_dir()

    def child_env(self) -> dict[str, str]:
        return {"DRASILL_MESH_DIR": str(self.store.root), "DRASILL_MESH_URL": ""}  # "": not set

    def read_only_view(self) -> DirectoryBackend:
        return DirectoryBackend(self.store.read_only_view(), self.config)

    def close(self) -> None:
        """Nothing to release: every file is closed when its operation ends."""

    # ---- the interfaces of drasill_cli.storage (one cached property each) -------------------

    @cached_property
    def locks(self) -> DirectoryLockTable:
        from drasill_cli.backends.directory.locktable import DirectoryLockTable

        return DirectoryLockTable(self.store)

    @cached_property
    def budgets(self) -> DirectoryBudgetBook:
        from drasill_cli.backends.directory.budgets import DirectoryBudgetBook

        return DirectoryBudgetBook(self.store)

    @cached_property
    def changes(self) -> DirectoryChanges:
        from drasill_cli.backends.directory.changes import DirectoryChanges

        return DirectoryChanges(self.store)

    @cached_property
    def wake_book(self) -> DirectoryWakeBook:
        from drasill_cli.backends.directory.wakebook import DirectoryWakeBook

        return DirectoryWakeBook(self.store)

    @cached_property
    def audit_log(self) -> DirectoryAuditLog:
        from drasill_cli.backends.directory.auditlog import DirectoryAuditLog

        return DirectoryAuditLog(self.store, self.config.audit)

    @cached_property
    def maintenance(self) -> DirectoryMaintenance:
        from drasill_cli.backends.directory.maintenance import DirectoryMaintenance

        return DirectoryMaintenance(self.store, self.config)

    @cached_property
    def presence(self) -> DirectoryPresence:
        from drasill_cli.backends.directory.presence import DirectoryPresence

        return DirectoryPresence(self.store)

    @cached_property
    def board(self) -> DirectoryBoard:
        from drasill_cli.backends.directory.board import DirectoryBoard

        return DirectoryBoard(self.store, self._audit)

    def _audit(self, line: dict[str, Any]) -> None:
        """Append a task change's audit event under the task's exclusion (the board's)."""
        from drasill_cli.storage.auditlog import append_or_warn

        append_or_warn(self.audit_log, self.warnings, line)

    @cached_property
    def mailbox(self) -> DirectoryMailbox:
        from drasill_cli.backends.directory.mailbox import DirectoryMailbox

        # The attachments are built on first use: most mail carries no files.
        return DirectoryMailbox(
            self.store,
            lambda msg_id, name: self.attachments.local_path(msg_id, name),  # noqa: PLW0108 -- deferred: builds the attachments only when a message has files
            lambda event: append_or_warn(self.audit_log, self.warnings, event),
            lambda name: self.presence.is_registered(name),  # noqa: PLW0108 -- deferred: presence is built on first use
        )

    @cached_property
    def attachments(self) -> DirectoryAttachments:
        from drasill_cli.backends.directory.attachments import DirectoryAttachments

        # A lambda, not `self.mailbox.locator`: the mailbox is built from `self.attachments`.
        return DirectoryAttachments(self.store, lambda: self.mailbox.locator())  # noqa: PLW0108

    @cached_property
    def transfer(self) -> DirectoryTransfer:
        from drasill_cli.backends.directory.transfer import DirectoryTransfer

        return DirectoryTransfer(self)
