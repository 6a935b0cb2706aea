"""Shared fixtures: an isolated mesh directory and a runner for the real `mesh` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from drasill_cli.config import Config
from drasill_cli.mesh import Mesh

if TYPE_CHECKING:
    from drasill_cli.backends.postgres import PostgresBackend


class MeshRunner:
    """Runs `mesh` against one mesh (a directory, or a PostgreSQL URL) with a clean
    environment: in the test process, or as a subprocess where that proves something."""

    def __init__(self, mesh_dir: Path, home: Path, *, url: str | None = None) -> None:
        self._mesh_dir = mesh_dir
        self.url = url
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DRASILL_", "HEIMDALL_", "TMUX"))
        }
        self.env.update(
            {
                "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data"),
                "XDG_CACHE_HOME": str(home / "cache"),
                "HOME": str(home),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        if url is None:
            self.env["DRASILL_MESH_DIR"] = str(mesh_dir)
        else:
            self.env["DRASILL_MESH_URL"] = url

    @property
    def kind(self) -> str:
        """The kind of mesh the runner's commands use: "directory" or "postgres"."""
        return "directory" if self.url is None else "postgres"

    @property
    def mesh_dir(self) -> Path:
        """The mesh directory (a directory mesh only: a test that looks at the mesh's files is
        marked `directory_only`)."""
        if self.url is not None:
            pytest.fail(f"this test looks at mesh files: {DIRECTORY_ONLY_HINT}")
        return self._mesh_dir

    @contextmanager
    def open(self, config: Config | None = None) -> Iterator[Mesh]:
        """The Python API on the runner's mesh (closed after the block)."""
        if self.url is None:
            opened = Mesh.open(self._mesh_dir, config or Config())
        else:
            opened = Mesh.open(config=config or Config(), mesh_url=self.url)
        try:
            yield opened
        finally:
            opened.backend.close()

    def snapshot(self) -> dict[str, Any]:
        """Everything the mesh holds, to prove a command wrote nothing: every file (`tree`), or
        every row of a database mesh (`database_rows`)."""
        if self.url is None:
            return tree(self._mesh_dir)
        return database_rows(self.url)

    def is_empty(self) -> bool:
        """Whether nothing was ever written: no mesh directory, or not a row in the database
        (whose tables are made on first use)."""
        if self.url is None:
            return not self._mesh_dir.exists()
        return database_rows(self.url) == {}

    def set_heartbeat(self, name: str, when: float) -> None:
        """Plant `name`'s last heartbeat at `when` (epoch seconds): its heartbeat file's mtime,
        or its row's heartbeat in the database."""
        if self.url is None:
            os.utime(self._mesh_dir / "heartbeats" / name, (when, when))
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            changed = conn.execute(
                "UPDATE mesh_agents SET heartbeat = to_timestamp(%s) WHERE name = %s",
                (when, name),
            ).rowcount
        assert changed == 1, f"no agent {name} to plant a heartbeat for"

    def heartbeat(self, name: str) -> float | None:
        """`name`'s last heartbeat as stored (epoch seconds), or None when it has none."""
        if self.url is None:
            beat = self._mesh_dir / "heartbeats" / name
            return beat.stat().st_mtime if beat.exists() else None
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM heartbeat)::float8 FROM mesh_agents WHERE name = %s",
                (name,),
            ).fetchone()
        return None if row is None else row[0]

    def listening(self, topic: str) -> bool:
        """Whether a session of the database mesh LISTENs on `topic` (a waiter is waiting)."""
        import psycopg

        from drasill_cli.backends.postgres.changes import channel

        assert self.url is not None, "a directory mesh has no LISTEN"
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

    def events(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first: the lines of the directory mesh's current log file as
        stored, or every event of a database mesh's log."""
        if self.url is None:
            path = self._mesh_dir / "audit" / "events.jsonl"
            return [json.loads(line) for line in path.read_text().splitlines()]
        with self.open() as opened:
            return list(opened.backend.audit_log.read())

    def argv(self, *args: str) -> list[str]:
        """The command line that runs `mesh ARGS`."""
        return [sys.executable, "-m", "drasill_cli", *args]

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 60,
        process: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `mesh ARGS` and return the completed process (text mode): in this process
        (tests/inprocess.py), or as a real subprocess with `process=True`, where a process is
        what the test proves something about (races, signals, start-up, a terminal, servers,
        commands left running)."""
        merged = {**self.env, **(env or {})}
        if not process and any(key.startswith("PYTHON") for key in env or {}):
            pytest.fail(
                "a run with its own PYTHON* variables needs a fresh interpreter: process=True"
            )
        if not process:
            from tests.inprocess import run_mesh

            return run_mesh(args, input=input, env=merged, cwd=cwd)
        return subprocess.run(
            self.argv(*args),
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True,
            text=True,
            env=merged,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, **kwargs: Any) -> Any:
        """Run `mesh ARGS --json`, require exit 0, return the parsed stdout."""
        done = self.run(*args, "--json", **kwargs)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def config(self, text: str) -> Path:
        """Write the config file the runner's processes will read."""
        path = Path(self.env["XDG_CONFIG_HOME"]) / "drasill" / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


# ---- Which kind of mesh a test runs on -----------------------------------------------------
#
# A module marked `pytestmark = pytest.mark.both_backends` runs each of its tests that use the
# `cli` fixture twice: on a directory mesh (`[directory]`) and on a fresh PostgreSQL schema
# (`[postgres]`); the `mesh` fixture then opens the same mesh. A test that looks at or plants
# the mesh's files (`mesh_dir`, `cli.mesh_dir`, `mesh.root`, `mesh.store`) is directory-only by
# nature: `@pytest.mark.directory_only("why")` keeps it to a directory mesh. Every other test
# uses a directory mesh, as before.

BACKENDS = ("directory", "postgres")
DIRECTORY_ONLY_HINT = (
    'mark it @pytest.mark.directory_only("reason") or speak only through the CLI, '
    "cli.snapshot(), cli.events() and cli.open()"
)


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package's bytecode once, in the controlling process: the tests run `mesh`
    thousands of times with PYTHONDONTWRITEBYTECODE=1 (as these machines set it), and from a
    fresh clone each of those runs would compile every module it imports anew."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "drasill_cli"), quiet=1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the `cli` tests of `both_backends` modules by the kind of mesh."""
    node = metafunc.definition
    if (
        "cli" in metafunc.fixturenames
        and node.get_closest_marker("both_backends") is not None
        and node.get_closest_marker("directory_only") is None
    ):
        metafunc.parametrize("mesh_kind", BACKENDS, indirect=True)


@pytest.fixture
def mesh_kind(request: pytest.FixtureRequest) -> str:
    """The kind of mesh this test runs on: "directory" unless parametrized."""
    kind: str = getattr(request, "param", "directory")
    return kind


@pytest.fixture
def mesh_url(request: pytest.FixtureRequest, mesh_kind: str) -> str | None:
    """The test's PostgreSQL mesh (a fresh schema) when it runs on one, else None."""
    if mesh_kind == "postgres":
        url: str = request.getfixturevalue("pg_mesh_url")
        return url
    return None


@pytest.fixture
def mesh_dir(tmp_path: Path, mesh_kind: str) -> Path:
    """Where the test's mesh lives (not yet created)."""
    if mesh_kind != "directory":
        pytest.fail(f"this test asks for the mesh directory: {DIRECTORY_ONLY_HINT}")
    return tmp_path / "mesh"


@pytest.fixture
def cli(tmp_path: Path, mesh_url: str | None) -> MeshRunner:
    """A runner for the real CLI against the test's mesh."""
    home = tmp_path / "home"
    home.mkdir()
    return MeshRunner(tmp_path / "mesh", home, url=mesh_url)


@pytest.fixture
def mesh(tmp_path: Path, mesh_url: str | None) -> Iterator[Mesh]:
    """The Python API on the test's mesh, with default config."""
    if mesh_url is None:
        yield Mesh.open(tmp_path / "mesh", Config())
        return
    opened = Mesh.open(config=Config(), mesh_url=mesh_url)
    try:
        yield opened
    finally:
        opened.backend.close()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (to prove nothing changed)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ---- PostgreSQL: one throwaway cluster per test session, a fresh schema per test -------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL server for the tests: $DRASILL_TEST_PG_URL (`.ci/run` starts one
    with tests/pg_cluster.py), else a cluster of our own for this session; skipped only when no
    server binaries exist here."""
    given = os.environ.get("DRASILL_TEST_PG_URL")
    if given:
        yield given
        return
    import tempfile

    from tests import pg_cluster

    if pg_cluster.server_bindir() is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql "
            "package or set DRASILL_TEST_PG_URL"
        )
    base = Path(tempfile.mkdtemp(prefix="drasill-pg-"))
    try:
        yield pg_cluster.start(base)
    finally:
        pg_cluster.stop(base)


def with_schema(url: str, schema: str) -> str:
    """`url` with `schema` first on the search path (the mesh's tables go there)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


def postgres_backend(url: str) -> PostgresBackend:
    """The PostgreSQL mesh at `url`, opened as `mesh` opens it (for the backend's own tests)."""
    from drasill_cli.backends import open_backend
    from drasill_cli.backends.postgres import PostgresBackend

    backend = open_backend(url, Config())
    assert isinstance(backend, PostgresBackend)
    return backend


@pytest.fixture
def pg_mesh_url(pg_url: str) -> Iterator[str]:
    """A URL whose mesh is empty: a fresh schema (made on first use, dropped after the test)."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield with_schema(pg_url, schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


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
