"""`Mesh`: an opened mesh (a storage backend) with its config; the handle every core function takes.

Feature modules reach stored state through the interfaces the backend carries (`mesh.mailbox`,
`mesh.board`, ...: see `drasill_cli.storage`); they never see a path, a file or a table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drasill_cli.config import Config, load_config, resolve_mesh_location
from drasill_cli.names import check_agent_name
from drasill_cli.storage import auditlog

if TYPE_CHECKING:
    from drasill_cli.backends.directory import DirectoryBackend
    from drasill_cli.backends.directory.store import FileStore
    from drasill_cli.storage import Backend


class Mesh:
    """A storage backend plus the config that governs it."""

    def __init__(self, backend: Backend, config: Config) -> None:
        self.backend = backend
        self.config = config

    @classmethod
    def open(
        cls,
        mesh_dir: str | os.PathLike[str] | None = None,
        config: Config | None = None,
        *,
        mesh_url: str | None = None,
        read_only: bool = False,
    ) -> Mesh:
        """Open the mesh by the contract's precedence (a directory or a PostgreSQL URL); it is
        created by its first write (a database's tables on first use). `read_only`: a view
        that refuses every write and never makes nor migrates the store (completion)."""
        config = config or load_config()
        from drasill_cli.backends import open_backend

        location = resolve_mesh_location(mesh_dir, mesh_url, config)
        return cls(open_backend(location, config, read_only=read_only), config)

    @classmethod
    def inspect(cls, root: Path, config: Config) -> Mesh:
        """The mesh at `root` as it is, read-only, refusing nothing: for `mesh doctor`, which
        asks `backend.maintenance.check()` what `open` would refuse and why."""
        from drasill_cli.backends import inspect_directory

        return cls(inspect_directory(root, config), config)

    def read_only(self) -> Mesh:
        """A view of this mesh that refuses every write (dry runs)."""
        return Mesh(self.backend.read_only_view(), self.config)

    @property
    def location(self) -> str:
        """Where the mesh lives, fit to print (a directory, or a URL with its password masked)."""
        return self.backend.location

    @property
    def _directory(self) -> DirectoryBackend:
        from drasill_cli.backends.directory import DirectoryBackend

        if not isinstance(self.backend, DirectoryBackend):
            raise TypeError(f"a {self.backend.kind} mesh has no directory")
        return self.backend

    @property
    def root(self) -> Path:
        """The mesh directory (a directory mesh only: its tests and `mesh doctor`)."""
        return self._directory.root

    @property
    def store(self) -> FileStore:
        """The directory backend's file store (a directory mesh only: tests and `mesh doctor`
        plant and inspect files through it; feature modules never use it)."""
        return self._directory.store

    @property
    def warnings(self) -> list[str]:
        """Problems met and handled (quarantined records); the CLI shows them on stderr."""
        return self.backend.warnings

    # Presence asked on hot paths by many modules (`mesh.backend.presence` has the rest).

    def is_registered(self, name: str) -> bool:
        """Whether `name` has an agent record (no parse: cheap on hot paths)."""
        return self.backend.presence.is_registered(name)

    def agent_names(self) -> list[str]:
        """Names of every registered agent, sorted (no parse)."""
        return self.backend.presence.names()

    def touch_heartbeat(self, name: str) -> bool:
        """Count a command run as `name` as its heartbeat; False if `name` is not registered."""
        check_agent_name(name)
        return self.backend.presence.beat(name)

    def record(self, event: str, actor: str | None, **details: Any) -> None:
        """Append one event to the audit log: time, event, actor and details (the log's one
        writer; `drasill_cli.audit` reads it). A failing append is a warning (`append_or_warn`).
        """
        auditlog.append_or_warn(
            self.backend.audit_log, self.warnings, auditlog.event(event, actor, **details)
        )
