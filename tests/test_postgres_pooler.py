"""`mesh doctor` through a real pgbouncer: a transaction-mode pool (which breaks LISTEN) is a
warning naming the fix; a session-mode pool is fine. Skipped, with the reason, only where no
pgbouncer is installed (`.ci/run` installs it)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from tests import pg_cluster
from tests.conftest import MeshRunner

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)

pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed")


def _server(url: str) -> tuple[str, str]:
    """The test server's host (a socket directory or a name) and port, from its URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = query.get("port", [str(parts.port or 5432)])[0]
    return host, port


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """A fresh database (the pooler passes no search_path, so the mesh goes in its public)."""
    name = f"pool_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def _pgbouncer(pg_url: str, database: str, mode: str) -> Iterator[str]:
    """A pgbouncer in `mode` on a unix socket of its own, in front of the test server; the URL
    of `database` through it."""
    assert PGBOUNCER is not None
    host, port = _server(pg_url)
    user = pg_cluster._server_user()  # pgbouncer, like the server, refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="pgb-"))
    listen = 20000 + os.getpid() % 20000
    config = base / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        "listen_addr =\n"
        f"listen_port = {listen}\n"
        f"unix_socket_dir = {base}\n"
        "auth_type = trust\n"
        f"auth_file = {base / 'users.txt'}\n"
        f"pool_mode = {mode}\n"
        "ignore_startup_parameters = options\n"
        f"logfile = {base / 'pgbouncer.log'}\n"
        f"pidfile = {base / 'pgbouncer.pid'}\n"
    )
    (base / "users.txt").write_text('"mesh" ""\n')
    if user is not None:
        info = pwd.getpwnam(user)
        for path in (base, config, base / "users.txt"):
            os.chown(path, info.pw_uid, info.pw_gid)
    subprocess.run([PGBOUNCER, "-d", str(config)], user=user, check=True, timeout=30)
    socket = base / f".s.PGSQL.{listen}"
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"postgresql://mesh@/{database}?host={base}&port={listen}"
    finally:
        pid = (base / "pgbouncer.pid").read_text().strip()
        subprocess.run(["kill", pid], check=False)
        deadline = time.monotonic() + 10
        while (base / "pgbouncer.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(("mode", "status"), [("transaction", "warn"), ("session", "ok")])
def test_doctor_tells_a_transaction_pool_from_a_session_pool(
    cli: MeshRunner, pg_url: str, database: str, mode: str, status: str
) -> None:
    with _pgbouncer(pg_url, database, mode) as url:
        env = {"DRASILL_MESH_DIR": "", "DRASILL_MESH_URL": url}
        assert cli.run("register", "alice", env=env).returncode == 0
        done = cli.run("doctor", "--json", env=env)
        found = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        pooler = found["database-pooler"]
        assert pooler["status"] == status, pooler
        if status == "warn":
            assert "pool_mode = session" in pooler["fix"]
            assert "transaction pooler" in pooler["detail"]
