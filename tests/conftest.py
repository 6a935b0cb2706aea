"""Shared fixtures: an isolated mesh directory and a runner for the real `mesh` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli.config import Config
from drasill_cli.mesh import Mesh


class MeshRunner:
    """Runs `mesh` in a subprocess against one mesh directory with a clean environment."""

    def __init__(self, mesh_dir: Path, home: Path) -> None:
        self.mesh_dir = mesh_dir
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DRASILL_", "HEIMDALL_", "TMUX"))
        }
        self.env.update(
            {
                "DRASILL_MESH_DIR": str(mesh_dir),
                "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_DATA_HOME": str(home / "data"),
                "XDG_CACHE_HOME": str(home / "cache"),
                "HOME": str(home),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )

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
    ) -> subprocess.CompletedProcess[str]:
        """Run `mesh ARGS` and return the completed process (text mode)."""
        merged = {**self.env, **(env or {})}
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


@pytest.fixture
def mesh_dir(tmp_path: Path) -> Path:
    """Where the test's mesh lives (not yet created)."""
    return tmp_path / "mesh"


@pytest.fixture
def cli(mesh_dir: Path, tmp_path: Path) -> MeshRunner:
    """A runner for the real CLI against the test's mesh."""
    home = tmp_path / "home"
    home.mkdir()
    return MeshRunner(mesh_dir, home)


@pytest.fixture
def mesh(mesh_dir: Path) -> Iterator[Mesh]:
    """The Python API on the test's mesh, with default config."""
    yield Mesh.open(mesh_dir, Config())


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


@pytest.fixture
def pg_mesh_url(pg_url: str) -> Iterator[str]:
    """A URL whose mesh is empty: a fresh schema (made on first use, dropped after the test)."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield with_schema(pg_url, schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
