"""`Mesh`: an opened mesh directory with its config; the handle every core function takes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drasill_cli import audit
from drasill_cli.config import Config, load_config, resolve_mesh_dir
from drasill_cli.errors import MeshError
from drasill_cli.names import AGENT_NAME_RE, RESERVED_NAMES, check_agent_name
from drasill_cli.store import MAX_RECORD_BYTES, FileStore, Store


def agent_record_path(name: str) -> str:
    """Where an agent's record is stored."""
    return f"agents/{name}.json"


def heartbeat_path(name: str) -> str:
    """The file whose mtime is an agent's last sign of life."""
    return f"heartbeats/{name}"


class Mesh:
    """A store plus the config that governs it."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    @classmethod
    def open(
        cls,
        mesh_dir: str | os.PathLike[str] | None = None,
        config: Config | None = None,
    ) -> Mesh:
        """Open the mesh by the contract's precedence; it is created by its first write."""
        config = config or load_config()
        root = resolve_mesh_dir(mesh_dir, config)
        store = FileStore.open(
            root,
            group_shared=config.group_shared,
            fsync=config.store.fsync,
            max_record_bytes=max(MAX_RECORD_BYTES, 8 * config.messages.max_body_bytes),
        )
        return cls(store, config)

    def read_only(self) -> Mesh:
        """A view of this mesh that refuses every write (dry runs)."""
        return Mesh(self.store.read_only_view(), self.config)

    @property
    def root(self) -> Path:
        """The mesh directory."""
        return self.store.root

    @property
    def warnings(self) -> list[str]:
        """Problems met and handled (quarantined files); the CLI shows them on stderr."""
        return self.store.warnings

    def is_registered(self, name: str) -> bool:
        """Whether `name` has an agent record (a stat, no parse: cheap on hot paths)."""
        return self.store.mtime(agent_record_path(name)) is not None

    def agent_names(self) -> list[str]:
        """Names of every registered agent, sorted (from file names: no parse). A file whose
        name is not an agent name is not an agent (it is left for `mesh doctor` to report)."""
        names = (n.removesuffix(".json") for n in self.store.names("agents"))
        return [n for n in names if AGENT_NAME_RE.fullmatch(n) and n not in RESERVED_NAMES]

    def touch_heartbeat(self, name: str) -> bool:
        """Count a command run as `name` as its heartbeat; False if `name` is not registered."""
        check_agent_name(name)
        if not self.is_registered(name):
            return False
        self.store.touch(heartbeat_path(name))
        return True

    def record(self, event: str, actor: str | None, **details: Any) -> None:
        """Append one event to the audit log.

        The change it describes has already happened, so a failing audit write is reported as
        a warning (see `mesh doctor`) instead of failing the command after the fact.
        """
        try:
            audit.append(self, event, actor, **details)
        except (MeshError, OSError) as exc:
            self.warnings.append(f"could not append to the audit log: {exc}; run mesh doctor")
