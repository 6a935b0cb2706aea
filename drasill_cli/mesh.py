"""`Mesh`: an opened mesh (a storage backend) with its config; the handle every core function takes.

Feature modules reach stored state through the interfaces the backend carries (`mesh.mailbox`,
`mesh.board`, ...: see `drasill_cli.storage`); they never see a path, a file or a table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from drasill_cli.config import Config, load_config, resolve_mesh_location
from drasill_cli.names import check_agent_name
from drasill_cli.storage import auditlog

if TYPE_CHECKING:
    from drasill_cli.location import Location
    from drasill_cli.storage import Backend
    from drasill_cli.storage.maintenance import Finding


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
        location = resolve_mesh_location(mesh_dir, mesh_url, config)
        return cls.at(location, config, read_only=read_only)

    @classmethod
    def at(cls, location: Location, config: Config, *, read_only: bool = False) -> Mesh:
        """The mesh at `location`, opened by the backend the registry picks for it (exit 2
        for a location no backend serves, nothing opened)."""
        from drasill_cli.backends import open_backend

        return cls(open_backend(location, config, read_only=read_only), config)

    def read_only(self) -> Mesh:
        """A view of this mesh that refuses every write (dry runs)."""
        return Mesh(self.backend.read_only_view(), self.config)

    @property
    def location(self) -> str:
        """Where the mesh lives, fit to print (a directory, or a URL with its password masked)."""
        return self.backend.location

    @property
    def spans_hosts(self) -> bool:
        """Whether the mesh is reached from several machines at once (its backend's registry
        entry says so): views then show each agent's host."""
        from drasill_cli.backends import entry_of_kind

        return entry_of_kind(self.backend.kind).spans_hosts

    @property
    def warnings(self) -> list[str]:
        """Problems met and handled (quarantined records); the CLI shows them on stderr."""
        return self.backend.warnings

    # Presence asked on hot paths by many modules (`mesh.backend.presence` has the rest).

    def is_registered(self, name: str) -> bool:
        """Whether `name` has an agent record (no parse: cheap on hot paths)."""
        return self.backend.presence.is_registered(name)

    def require_registered(self, name: str, doing: str) -> None:
        """Refuse (NotRegistered, exit 3) `doing` as `name` unless it is a registered agent:
        claiming, locking and moving a claimed task need a name the mesh can watch (one that
        dies is requeued and its locks freed); sending, adding tasks and reviewing do not."""
        if self.is_registered(name):
            return
        from drasill_cli.errors import NotRegistered

        raise NotRegistered(
            f"{name} is not a registered agent, so it cannot {doing}; register it first with "
            f"`mesh register {name}` (or check the name: --as, DRASILL_AGENT)",
            agent=name,
        )

    def agent_names(self) -> list[str]:
        """Names of every registered agent, sorted (no parse)."""
        return self.backend.presence.names()

    def touch_heartbeat(self, name: str) -> bool:
        """Count a command run as `name` as its heartbeat; False if `name` is not registered."""
        check_agent_name(name)
        return self.backend.presence.beat(name)

    def append_audit_event(self, event: str, actor: str | None, **details: Any) -> None:
        """Append one event to the audit log: time, event, actor and details (the log's one
        writer; `drasill_cli.audit` reads it). A failing append is a warning (`append_or_warn`).
        """
        auditlog.append_or_warn(
            self.backend.audit_log, self.warnings, auditlog.event(event, actor, **details)
        )


def diagnose(location: Location, config: Config) -> list[Finding]:
    """The backend's own diagnosis of the mesh at `location` as it is (`mesh doctor`): what
    opening it would refuse and why, every backend-specific check included; nothing created."""
    from drasill_cli.backends import diagnose as backend_diagnose

    return backend_diagnose(location, config)


def shown_location(location: Location) -> str:
    """Where the mesh at `location` lives, fit to print (a URL's password masked), without
    opening it; exit 2 for a location no backend serves or can use."""
    from drasill_cli.backends import shown_location as shown

    return shown(location)
