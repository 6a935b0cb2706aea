"""`mesh doctor` on a URL mesh: the database's own checks (reachable with the URL masked, server
version, privileges, round-trip time, clock skew, transaction pooler), and never a password in
its output."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import pg_cluster
from tests.conftest import MeshRunner, with_schema

DATABASE_CHECKS = [
    "mesh-database",
    "database-server",
    "database-writable",
    "database-privileges",
    "database-latency",
    "database-clock",
    "database-pooler",
    "database-quarantine",
]


def with_login(url: str, user: str, password: str) -> str:
    """`url` (whose user part is `mesh@`) logging in as `user` with `password`."""
    return url.replace("mesh@", f"{user}:{password}@", 1)


def test_doctor_lists_the_database_checks_with_the_url_masked(
    cli: MeshRunner, pg_mesh_url: str
) -> None:
    url = with_login(pg_mesh_url, pg_cluster.PASSWORD_ROLE, pg_cluster.PASSWORD)
    masked = url.replace(pg_cluster.PASSWORD, "***")
    env = {"DRASILL_MESH_DIR": ""}
    done = cli.run("--mesh-url", url, "doctor", "--json", env=env)
    assert pg_cluster.PASSWORD not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    found = {c["name"]: c for c in report["checks"]}
    assert [n for n in found if n in DATABASE_CHECKS] == DATABASE_CHECKS
    bad = {n: found[n] for n in DATABASE_CHECKS if found[n]["status"] != "ok"}
    assert not bad, bad
    assert masked in found["mesh-database"]["detail"]
    assert found["mesh-database"]["required"] and found["database-privileges"]["required"]
    assert "PostgreSQL " in found["database-server"]["detail"]
    assert "ms" in found["database-latency"]["detail"]
    assert "clock" in found["database-clock"]["detail"]
    assert "LISTEN/NOTIFY works" in found["database-pooler"]["detail"]
    assert pg_cluster.PASSWORD_ROLE in found["database-privileges"]["detail"]
    done = cli.run("doctor", env={**env, "DRASILL_MESH_URL": url})
    assert pg_cluster.PASSWORD not in done.stdout + done.stderr
    for name in DATABASE_CHECKS:
        assert name in done.stdout
    assert masked in done.stdout


def test_doctor_fails_a_role_without_rights_on_the_tables_naming_the_grant(
    cli: MeshRunner, pg_url: str, pg_mesh_url: str
) -> None:
    Mesh.open(config=Config(), mesh_url=pg_mesh_url).backend.close()  # tables made by `mesh`
    schema = pg_mesh_url.rpartition("%3D")[2]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {pg_cluster.PASSWORD_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {pg_cluster.PASSWORD_ROLE}")
    url = with_schema(with_login(pg_url, pg_cluster.PASSWORD_ROLE, pg_cluster.PASSWORD), schema)
    done = cli.run("--mesh-url", url, "doctor", "--json", env={"DRASILL_MESH_DIR": ""})
    assert done.returncode == 1
    assert pg_cluster.PASSWORD not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    found = {c["name"]: c for c in report["checks"]}
    privileges = found["database-privileges"]
    assert privileges["status"] == "fail" and privileges["required"]
    assert "mesh_agents" in privileges["detail"] and "INSERT" in privileges["detail"]
    assert f"ON ALL TABLES IN SCHEMA {schema} TO {pg_cluster.PASSWORD_ROLE}" in privileges["fix"]
    assert report["error"]["code"] == "doctor-failed"


def test_a_skewed_clock_is_a_warning_naming_the_fix(
    pg_mesh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This host's clock 10 s ahead of the server's (a stepped clock cannot be made here
    otherwise: only this process's view of it is moved, while the check runs)."""
    mesh = Mesh.open(config=Config(), mesh_url=pg_mesh_url)
    try:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 10)
        found = {f.name: f for f in mesh.backend.maintenance.check()}
    finally:
        mesh.backend.close()
    skew = found["database-clock"]
    assert skew.status == "warn"
    assert "behind" in skew.detail and "leases" in skew.detail
    assert skew.fix is not None and "NTP" in skew.fix
