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
from drasill_cli.location import Location
from drasill_cli.mesh import Mesh
from tests.harness import (
    DirectoryHarness,
    PostgresHarness,
    database_rows,
    harness_at,
    location_of,
    tree,
)

if TYPE_CHECKING:
    from drasill_cli.backends.postgres import PostgresBackend

__all__ = [
    "MeshRunner",
    "database_rows",
    "register",
    "tree",
    "with_schema",
]


def register(mesh: Mesh, *names: str) -> None:
    """Register `names` on `mesh` as live agents (their life is the test's process): a name
    must be registered to claim, lock or move a claimed task."""
    from drasill_cli import agents

    for name in names:
        agents.register(mesh, name, pid=os.getpid())


class MeshRunner:
    """Runs `mesh` against one mesh (a directory, or a PostgreSQL URL) with a clean
    environment: in the test process, or as a subprocess where that proves something."""

    def __init__(self, mesh_dir: Path, home: Path, *, url: str | None = None) -> None:
        self._mesh_dir = mesh_dir
        self.url = url
        # The mesh's own harness (tests/harness.py): every backend-specific step goes there.
        self.harness = harness_at(location_of(mesh_dir, url))
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
        self.env.update(self.harness.env())

    @property
    def kind(self) -> str:
        """The kind of mesh the runner's commands use: "directory" or "postgres"."""
        return self.harness.kind

    @property
    def mesh_dir(self) -> Path:
        """The mesh directory (a directory mesh only: a test that looks at the mesh's files is
        marked `directory_only`)."""
        if not isinstance(self.harness, DirectoryHarness):
            pytest.fail(f"this test looks at mesh files: {DIRECTORY_ONLY_HINT}")
        return self.harness.root

    @contextmanager
    def open(self, config: Config | None = None) -> Iterator[Mesh]:
        """The Python API on the runner's mesh (closed after the block)."""
        with self.harness.open(config) as opened:
            yield opened

    def snapshot(self) -> dict[str, Any]:
        """Everything the mesh holds, to prove a command wrote nothing: every file (`tree`), or
        every row of a database mesh (`database_rows`)."""
        return self.harness.snapshot()

    def is_empty(self) -> bool:
        """Whether nothing was ever written: no mesh directory, or not a row in the database
        (whose tables are made on first use)."""
        return self.harness.is_empty()

    def set_heartbeat(self, name: str, when: float) -> None:
        """Plant `name`'s last heartbeat at `when` (epoch seconds): its heartbeat file's mtime,
        or its row's heartbeat in the database."""
        self.harness.set_heartbeat(name, when)

    def heartbeat(self, name: str) -> float | None:
        """`name`'s last heartbeat as stored (epoch seconds), or None when it has none."""
        return self.harness.heartbeat(name)

    def listening(self, topic: str) -> bool:
        """Whether a session of the database mesh LISTENs on `topic` (a waiter is waiting)."""
        return self.harness.listening(topic)

    def events(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first: the lines of the directory mesh's current log file as
        stored, or every event of a database mesh's log."""
        return self.harness.events()

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

    def register(self, *names: str) -> None:
        """Register `names` as live agents (their life is the test's process), in-process: a
        name must be registered to claim, lock or move a claimed task."""
        with self.open() as mesh:
            register(mesh, *names)

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
# the mesh's files (`mesh_dir`, `cli.mesh_dir`, `harness.directory_of(mesh)`) is directory-only by
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
    with harness_at(location_of(tmp_path / "mesh", mesh_url)).open() as opened:
        yield opened


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
    from drasill_cli.backends.postgres import PostgresBackend

    backend = PostgresHarness(Location.of_url(url)).open_backend()
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


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In-process `load_config` memoizes a config file in the cache directory: keep the
    suite's memos (and attachment caches) out of the user's own ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()
