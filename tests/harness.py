"""One test harness per storage backend: what tests need to know of a backend's own storage.

The feature and storage tests speak the interfaces; a few things no interface may do (plant a
damaged record, a heartbeat in the future, read the audit trail as stored, prove that nothing
was written) are done here, each backend its own way. `tests/conftest.py` (`MeshRunner`, the
`mesh` fixture) and the storage contract suite (`tests/storage/`) go through a harness and never
branch on the kind of mesh. Adding a backend: its package in `drasill_cli/backends/`, its entry
in the registry, and one harness class here listed in `HARNESSES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from drasill_cli.config import Config
from drasill_cli.location import Location
from drasill_cli.mesh import Mesh

if TYPE_CHECKING:
    from drasill_cli.backends.directory import DirectoryBackend
    from drasill_cli.backends.postgres import PostgresBackend
    from drasill_cli.storage import Backend
    from drasill_cli.storage.changes import Change


class Harness:
    """A mesh of one backend at one location, and the backend-specific steps tests take."""

    kind: ClassVar[str]

    def __init__(self, location: Location) -> None:
        self.location = location

    @classmethod
    def of(cls, backend: Backend) -> Harness:
        """The harness of an opened backend of this kind, at the backend's own location."""
        raise NotImplementedError

    # ---- opening -------------------------------------------------------------------------

    def open_backend(self, config: Config | None = None) -> Backend:
        """The mesh's backend, opened as `mesh` opens it (through the registry)."""
        from drasill_cli.backends import open_backend

        return open_backend(self.location, config or Config())

    @contextmanager
    def open(self, config: Config | None = None) -> Iterator[Mesh]:
        """The Python API on the mesh (closed after the block)."""
        opened = Mesh.at(self.location, config or Config())
        try:
            yield opened
        finally:
            opened.backend.close()

    def env(self) -> dict[str, str]:
        """The variable that points a `mesh` process at this mesh."""
        raise NotImplementedError

    def reopen_source(self) -> str:
        """Python source that opens this same mesh in another process as `backend`."""
        return (
            "from pathlib import Path\n"
            "from drasill_cli.backends import open_backend\n"
            "from drasill_cli.config import Config\n"
            "from drasill_cli.location import Location\n"
            f"backend = open_backend({self._location_source()}, Config())\n"
        )

    def _location_source(self) -> str:
        raise NotImplementedError

    # ---- looking -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the mesh holds, to prove a command wrote nothing."""
        raise NotImplementedError

    def is_empty(self) -> bool:
        """Whether nothing was ever written."""
        raise NotImplementedError

    def heartbeat(self, name: str) -> float | None:
        """`name`'s last heartbeat as stored (epoch seconds), or None when it has none."""
        raise NotImplementedError

    def set_heartbeat(self, name: str, when: float) -> None:
        """Plant `name`'s last heartbeat at `when` (epoch seconds)."""
        raise NotImplementedError

    def events(self) -> list[dict[str, Any]]:
        """The audit trail as stored, oldest first."""
        raise NotImplementedError

    def listening(self, topic: str) -> bool:
        """Whether a session waits on `topic` (a database mesh's LISTEN)."""
        raise NotImplementedError(f"a {self.kind} mesh has no LISTEN")

    # ---- planting what no interface may store (on an opened backend of this kind) -----------

    def plant_task_record(self, backend: Backend, task_id: str, raw: dict[str, Any]) -> None:
        """Store `raw` as task `task_id`'s record, unchecked."""
        raise NotImplementedError

    def plant_damaged_pause(self, backend: Backend, name: str) -> None:
        """Store a pause record of `name` that is not one."""
        raise NotImplementedError

    def plant_damaged_lock(self, backend: Backend) -> None:
        """Store a lock record that is not a lock."""
        raise NotImplementedError

    def plant_beat(self, backend: Backend, name: str, at: float) -> None:
        """Store `name`'s heartbeat at `at` (a future one: a clock that stepped back)."""
        raise NotImplementedError

    def causer(self, backend: Backend) -> Callable[[Change], None]:
        """Makes a change of a topic on `backend` (for the `Changes` contract tests)."""
        raise NotImplementedError


class DirectoryHarness(Harness):
    kind = "directory"

    @property
    def root(self) -> Path:
        assert self.location.path is not None
        return self.location.path

    @staticmethod
    def _backend(backend: Backend) -> DirectoryBackend:
        from drasill_cli.backends.directory import DirectoryBackend

        assert isinstance(backend, DirectoryBackend)
        return backend

    @classmethod
    def of(cls, backend: Backend) -> Harness:
        return cls(Location.directory(cls._backend(backend).root))

    def env(self) -> dict[str, str]:
        return {"DRASILL_MESH_DIR": str(self.root)}

    def _location_source(self) -> str:
        return f"Location.directory(Path({str(self.root)!r}))"

    def snapshot(self) -> dict[str, Any]:
        return tree(self.root)

    def is_empty(self) -> bool:
        return not self.root.exists()

    def heartbeat(self, name: str) -> float | None:
        beat = self.root / "heartbeats" / name
        return beat.stat().st_mtime if beat.exists() else None

    def set_heartbeat(self, name: str, when: float) -> None:
        os.utime(self.root / "heartbeats" / name, (when, when))

    def events(self) -> list[dict[str, Any]]:
        """The lines of the current log file as stored."""
        path = self.root / "audit" / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def plant_task_record(self, backend: Backend, task_id: str, raw: dict[str, Any]) -> None:
        from drasill_cli.backends.directory.layout import task_record

        self._backend(backend).store.write(task_record(task_id), raw)

    def plant_damaged_pause(self, backend: Backend, name: str) -> None:
        store = self._backend(backend).store
        store.write(f"budgets/paused/{name}.json", {"pids": [["not", "a pid"]]})

    def plant_damaged_lock(self, backend: Backend) -> None:
        store = self._backend(backend).store
        store.write("locks/not-a-lock.json", {"path": "relative", "mode": "write"})

    def plant_beat(self, backend: Backend, name: str, at: float) -> None:
        from drasill_cli.backends.directory.layout import heartbeat

        os.utime(self._backend(backend).store.path(heartbeat(name)), (at, at))

    def causer(self, backend: Backend) -> Callable[[Change], None]:
        """Through the feature modules (agents alice, bob and carol registered first)."""
        from drasill_cli import agents, messages, tasks
        from drasill_cli.storage.changes import INBOXES, TASKS

        mesh = Mesh(backend, Config())
        for name in ("alice", "bob", "carol"):
            agents.register(mesh, name)

        def on_files(change: Change) -> None:
            if change.topic == INBOXES and change.agent:
                messages.send(mesh, change.agent, "hello", sender="alice")
            elif change.topic == TASKS:
                tasks.add_task(mesh, "a task", actor="alice")
            else:
                raise AssertionError(f"no way to cause {change} yet")

        return on_files


class PostgresHarness(Harness):
    kind = "postgres"

    @property
    def url(self) -> str:
        assert self.location.url is not None
        return self.location.url

    @staticmethod
    def _backend(backend: Backend) -> PostgresBackend:
        from drasill_cli.backends.postgres import PostgresBackend

        assert isinstance(backend, PostgresBackend)
        return backend

    @classmethod
    def of(cls, backend: Backend) -> Harness:
        return cls(Location.of_url(cls._backend(backend).db.url))

    def env(self) -> dict[str, str]:
        return {"DRASILL_MESH_URL": self.url}

    def _location_source(self) -> str:
        return f"Location.of_url({self.url!r})"

    def snapshot(self) -> dict[str, Any]:
        """Every row (`database_rows`)."""
        return database_rows(self.url)

    def is_empty(self) -> bool:
        """Not a row in the database (whose tables are made on first use)."""
        return database_rows(self.url) == {}

    def heartbeat(self, name: str) -> float | None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM heartbeat)::float8 FROM mesh_agents WHERE name = %s",
                (name,),
            ).fetchone()
        return None if row is None else row[0]

    def set_heartbeat(self, name: str, when: float) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            changed = conn.execute(
                "UPDATE mesh_agents SET heartbeat = to_timestamp(%s) WHERE name = %s",
                (when, name),
            ).rowcount
        assert changed == 1, f"no agent {name} to plant a heartbeat for"

    def events(self) -> list[dict[str, Any]]:
        """Every event of the database's log."""
        with self.open() as opened:
            return list(opened.backend.audit_log.read())

    def listening(self, topic: str) -> bool:
        import psycopg

        from drasill_cli.backends.postgres.changes import channel

        with psycopg.connect(self.url, autocommit=True) as conn:
            # Channels are keyed by the mesh's random id (MIGRATION_3), not by its schema.
            mesh_id = conn.execute("SELECT id FROM mesh_identity").fetchone()
            assert mesh_id is not None, "the mesh has no id"
            name = channel(mesh_id[0], topic)
            # A watch lists itself there in the transaction that LISTENs (MIGRATION_2).
            row = conn.execute(
                "SELECT count(*) FROM mesh_listening WHERE channel = %s", (name,)
            ).fetchone()
        return bool(row and row[0])

    def plant_task_record(self, backend: Backend, task_id: str, raw: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        with self._backend(backend).transaction() as cur:
            cur.execute("UPDATE mesh_tasks SET record = %s WHERE id = %s", (Jsonb(raw), task_id))

    def plant_damaged_pause(self, backend: Backend, name: str) -> None:
        from psycopg.types.json import Jsonb

        with self._backend(backend).transaction() as cur:
            cur.execute(
                "INSERT INTO mesh_budgets (agent, state, host, record) VALUES (%s, %s, %s, %s)",
                (name, "paused", "here", Jsonb({"pids": [["not", "a pid"]]})),
            )

    def plant_damaged_lock(self, backend: Backend) -> None:
        from psycopg.types.json import Jsonb

        with self._backend(backend).transaction() as cur:
            cur.execute(
                "INSERT INTO mesh_locks (key, holder, mode, record) VALUES (%s, %s, %s, %s)",
                ("relative", "alpha", "write", Jsonb({"path": "relative", "mode": "write"})),
            )

    def plant_beat(self, backend: Backend, name: str, at: float) -> None:
        with self._backend(backend).transaction() as cur:
            cur.execute(
                "UPDATE mesh_agents SET heartbeat = to_timestamp(%s) WHERE name = %s", (at, name)
            )
            assert cur.rowcount == 1

    def causer(self, backend: Backend) -> Callable[[Change], None]:
        """A notification of the change, as a committed write announces it."""
        database = self._backend(backend)

        def on_database(change: Change) -> None:
            with database.db.transaction():
                database.changes.notify(change)

        return on_database


HARNESSES: dict[str, type[Harness]] = {h.kind: h for h in (DirectoryHarness, PostgresHarness)}


def location_of(directory: Path, url: str | None) -> Location:
    """A test's mesh: at `url` when it has one (a database mesh), else in `directory`."""
    return Location.of_url(url) if url is not None else Location.directory(directory)


def harness_at(location: Location) -> Harness:
    """The harness of the mesh at `location`, of the backend the registry picks for it."""
    from drasill_cli.backends import entry_for

    return HARNESSES[entry_for(location).kind](location)


def harness_of(backend: Backend) -> Harness:
    """The harness of an opened backend (at its own location: a directory, or its URL)."""
    return HARNESSES[backend.kind].of(backend)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (to prove nothing changed)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# Tables whose rows never change once made (the schema version, the guard rows, the id).
_FIXED_TABLES = ("mesh_schema", "mesh_guards", "mesh_identity")
# Columns that keep a last sign of life: `tree` sees a heartbeat file's content, not its mtime.
_LIFE_SIGNS = ("heartbeat",)


def database_rows(url: str) -> dict[str, Any]:
    """Every row of the database mesh at `url`, by table (empty tables left out; a heartbeat as
    whether there is one), and the last task number taken: the database's `tree`."""
    import psycopg
    from psycopg import sql

    from drasill_cli.backends.postgres.schema import TABLES

    found: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:

        def exists(name: str) -> bool:
            return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)

        for table in TABLES:
            if table in _FIXED_TABLES or not exists(table):
                continue
            cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
            names = [column.name for column in cur.description or ()]
            rows = sorted(
                repr(
                    {
                        name: (value is not None) if name in _LIFE_SIGNS else value
                        for name, value in zip(names, row, strict=True)
                    }
                )
                for row in cur.fetchall()
            )
            if rows:
                found[table] = rows
        if exists("mesh_task_numbers"):
            taken = conn.execute(
                "SELECT last_value FROM mesh_task_numbers WHERE is_called"
            ).fetchone()
            if taken is not None:
                found["mesh_task_numbers"] = taken[0]
    return found


def directory_of(mesh: Mesh) -> DirectoryBackend:
    """A directory mesh's own backend (its `root` folder and its `FileStore`), for the tests
    that look at or plant the mesh's files (directory-only by nature)."""
    from drasill_cli.backends.directory import DirectoryBackend

    backend = mesh.backend
    assert isinstance(backend, DirectoryBackend), f"a {backend.kind} mesh has no directory"
    return backend
