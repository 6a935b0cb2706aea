"""`Maintenance` for the directory mesh: sweep temp files of killed writers; diagnose the folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drasill_cli.backends.directory.store import FileStore

if TYPE_CHECKING:
    from drasill_cli.config import Config
    from drasill_cli.storage.maintenance import Finding


class DirectoryMaintenance:
    def __init__(self, store: FileStore, config: Config) -> None:
        self.store = store
        self.config = config

    def sweep(self, older_than: float, *, apply: bool = True) -> list[str]:
        """Only `staging/`'s temp files are ever swept (see `FileStore.sweep_temp`)."""
        return self.store.sweep_temp(older_than, remove=apply)

    def check(self) -> list[Finding]:
        """`mesh-dir` (safe and writable), `mesh-entries` (every entry at every depth) and
        `filesystem` (a network file system's locks do not exclude across machines)."""
        from drasill_cli.backends.directory.diagnose import check_mesh_dir, check_mesh_entries
        from drasill_cli.backends.directory.filesystem import check_filesystem

        root, group_shared = self.store.root, self.config.group_shared
        return [
            check_mesh_dir(root, group_shared=group_shared),
            check_mesh_entries(root, self.store.max_record_bytes, group_shared=group_shared),
            check_filesystem(root),
        ]
