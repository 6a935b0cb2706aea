"""Where the mesh lives, for a PostgreSQL mesh: `--mesh-url` > $DRASILL_MESH_URL > `[store] url`,
level by level with the directory; a URL and a directory at one level is exit 2; the driver is
imported only for a URL mesh and, when missing, named with what to install (exit 4); every
database failure is one exit-4 line naming the host and the fix, never the password.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from drasill_cli.backends.postgres.urls import describe_host, mask_url
from drasill_cli.config import Config, StoreConfig, resolve_mesh_location
from drasill_cli.errors import InvalidInput, MeshUnusable
from drasill_cli.location import Location
from drasill_cli.mesh import Mesh
from tests import pg_cluster
from tests.conftest import MeshRunner, with_schema

URL = "postgresql://team@db.example.com:5432/mesh"
NO_SERVER = "postgresql://mesh:hunter2-secret@127.0.0.1:1/postgres"


def with_login(url: str, user: str, password: str) -> str:
    """`url` (whose user part is `mesh@`) logging in as `user` with `password`."""
    return url.replace("mesh@", f"{user}:{password}@", 1)


# ---- precedence --------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("DRASILL_MESH_DIR", raising=False)
    monkeypatch.delenv("DRASILL_MESH_URL", raising=False)
    return monkeypatch


def config(mesh_dir: str | None = None, url: str | None = None) -> Config:
    return Config(mesh_dir=mesh_dir, store=StoreConfig(url=url), source="/etc/mesh.toml")


def test_each_level_beats_the_next(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_dir = str(tmp_path / "env-mesh")
    # the flags beat the variables
    clean_env.setenv("DRASILL_MESH_DIR", env_dir)
    at_url, at_dir = Location.of_url(URL), Location.directory
    assert resolve_mesh_location(None, URL, config()) == at_url
    clean_env.delenv("DRASILL_MESH_DIR")
    clean_env.setenv("DRASILL_MESH_URL", URL)
    assert resolve_mesh_location(str(tmp_path / "flag"), None, config()) == at_dir(
        tmp_path / "flag"
    )
    # the variables beat the config
    assert resolve_mesh_location(None, None, config(mesh_dir=str(tmp_path / "cfg"))) == at_url
    clean_env.delenv("DRASILL_MESH_URL")
    clean_env.setenv("DRASILL_MESH_DIR", env_dir)
    assert resolve_mesh_location(None, None, config(url=URL)) == at_dir(Path(env_dir))
    clean_env.delenv("DRASILL_MESH_DIR")
    # the config alone, then the default directory
    assert resolve_mesh_location(None, None, config(url=URL)) == at_url
    default = resolve_mesh_location(None, None, config()).path
    assert default is not None
    assert default.parts[-2:] == ("drasill", "mesh")


@pytest.mark.parametrize("level", ["flags", "variables", "config"])
def test_a_url_and_a_directory_at_one_level_are_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, level: str
) -> None:
    flags: tuple[str | None, str | None] = (None, None)
    cfg = config()
    if level == "flags":
        flags = (str(tmp_path), URL)
    elif level == "variables":
        clean_env.setenv("DRASILL_MESH_DIR", str(tmp_path))
        clean_env.setenv("DRASILL_MESH_URL", URL)
    else:
        cfg = config(mesh_dir=str(tmp_path), url=URL)
    with pytest.raises(InvalidInput, match="not both") as caught:
        resolve_mesh_location(*flags, cfg)
    assert caught.value.code == "mesh-location-conflict"


def test_cli_refuses_both_flags_with_exit_2_and_writes_nothing(cli: MeshRunner) -> None:
    # $DRASILL_MESH_DIR is set too, a level below: the flag wins (it goes to the database)
    done = cli.run("--mesh-url", NO_SERVER, "inbox", "--as", "bob")
    assert done.returncode == 4, done.stderr
    assert "unreachable" in done.stderr
    done = cli.run("--mesh-dir", str(cli.mesh_dir), "--mesh-url", URL, "inbox", "--as", "bob")
    assert done.returncode == 2, done.stderr
    assert "--mesh-dir and --mesh-url" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not cli.mesh_dir.exists()


def test_cli_refuses_both_variables_with_exit_2_in_json(cli: MeshRunner) -> None:
    done = cli.run("inbox", "--as", "bob", "--json", env={"DRASILL_MESH_URL": URL})
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "mesh-location-conflict"
    assert "DRASILL_MESH_DIR and DRASILL_MESH_URL" in error["message"]
    assert not cli.mesh_dir.exists()


@pytest.mark.parametrize("scheme", ["mysql", "sqlite", "directory", "POSTGRESQLX"])
def test_a_url_no_backend_serves_is_exit_2_naming_the_schemes_without_its_password(
    cli: MeshRunner, scheme: str
) -> None:
    url = f"{scheme}://me:hunter2-secret@host/db"
    done = cli.run("--mesh-url", url, "send", "bob", "hi", "--as", "alice")
    assert done.returncode == 2, done.stderr
    assert (
        f"--mesh-url names no kind of mesh this version knows (its scheme is {scheme.lower()!r})"
        in done.stderr
    )
    assert "postgresql:// or postgres://" in done.stderr and "--mesh-dir" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert cli.is_empty(), "nothing written"


def test_the_registry_refuses_an_unknown_scheme_before_opening_anything(tmp_path: Path) -> None:
    """Backend selection goes by the registry: a `sqlite://` location never reaches PostgreSQL
    (nor its driver), whatever asks to open it."""
    from drasill_cli.backends import open_backend

    where = Location.of_url(f"sqlite:///{tmp_path}/mesh.db", "[store] url in /etc/mesh.toml")
    with pytest.raises(InvalidInput, match="names no kind of mesh") as refused:
        open_backend(where, Config())
    assert refused.value.code == "invalid-mesh-url"
    assert "[store] url in /etc/mesh.toml" in refused.value.message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidInput):
        Mesh.at(where, Config())


def test_global_option_after_the_command_says_where_it_goes(cli: MeshRunner) -> None:
    done = cli.run("inbox", "--mesh-url", URL)
    assert done.returncode == 2
    assert "mesh --mesh-url URL inbox" in done.stderr


# ---- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u:***@h/db?sslmode=require",
        ),
        ("postgresql://u:a?b#c@h:5433/db", "postgresql://u:***@h:5433/db"),
        ("postgresql://u:p#w?x=1@h/db?sslmode=disable", "postgresql://u:***@h/db?sslmode=disable"),
        ("postgresql://u:pw@[::1]:5432,h2:5433/db", "postgresql://u:***@[::1]:5432,h2:5433/db"),
        (
            "postgresql://u@h/db?options=-csearch_path%3Dteam_a&sslpassword=k3y",
            "postgresql://u:***@h/db?options=-csearch_path%3Dteam_a&sslpassword=***",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgres:///db?host=/run/pg", "postgres:///db?host=/run/pg"),
    ],
)
def test_mask_url_hides_every_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:se?cr#et@[::1/db",  # an unbalanced [: libpq's error quotes the URL
        "postgresql://u:se@cret@h/db",  # an unencoded @: libpq reads "cret@h" as the host
        "postgresql://u:se/cret@h/db",  # an unencoded /: libpq reads "se" as the port
        "postgresql://u:se?cret@h:notaport/db",
    ],
)
def test_mask_url_never_shows_a_password_the_driver_misreads(url: str) -> None:
    shown = mask_url(url)
    assert shown.startswith("postgresql://")
    for part in ("se?cr", "cret", "se/", "se@"):
        assert part not in shown, shown


def test_describe_host_names_the_server() -> None:
    assert describe_host("postgresql://u@db.example.com:6543/x") == "db.example.com:6543"
    assert "/run/pg" in describe_host("postgresql:///x?host=/run/pg")
    assert describe_host("postgresql://u:12345?x@db.example.com/x") == "db.example.com:5432"


def test_an_unreadable_url_is_exit_2_without_the_url(cli: MeshRunner) -> None:
    url = "postgresql://mesh:hunter2?se#cret@[::1/postgres"
    env = {"DRASILL_MESH_DIR": ""}
    for args in (("--mesh-url", url, "status", "--json"), ("--mesh-url", url, "doctor")):
        done = cli.run(*args, env=env)
        assert done.returncode in (1, 2), done.stderr
        assert "hunter2" not in done.stdout + done.stderr
        assert "cret" not in done.stdout + done.stderr
    done = cli.run("inbox", "--as", "bob", "--json", env={**env, "DRASILL_MESH_URL": url})
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid-mesh-url"
    assert "DRASILL_MESH_URL" in error["message"]
    assert "hunter2" not in done.stdout + done.stderr


def test_a_password_with_question_mark_or_hash_is_never_shown(
    cli: MeshRunner, pg_mesh_url: str
) -> None:
    """libpq accepts `?` and `#` unencoded in a password; urllib would cut the URL there and
    show the rest. The test server trusts its socket, so any password logs in."""
    url = pg_mesh_url.replace("mesh@", "mesh:hunter2?se#cret@", 1)
    assert url != pg_mesh_url
    env = {"DRASILL_MESH_DIR": "", "DRASILL_MESH_URL": url}
    status = cli.run("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    doctor = cli.run("doctor", "--json", env=env)
    human = cli.run("doctor", env=env)
    for done in (status, doctor, human):
        out = done.stdout + done.stderr
        assert "hunter2" not in out
        assert "cret" not in out
    assert json.loads(status.stdout)["mesh_dir"].startswith("postgresql://mesh:***@")
    assert json.loads(doctor.stdout)["mesh_url"].startswith("postgresql://mesh:***@")


def test_an_opened_mesh_shows_its_url_masked(pg_mesh_url: str) -> None:
    url = with_login(pg_mesh_url, pg_cluster.PASSWORD_ROLE, pg_cluster.PASSWORD)
    mesh = Mesh.open(config=Config(), mesh_url=url)
    try:
        assert mesh.backend.kind == "postgres"
        assert pg_cluster.PASSWORD not in mesh.location
        assert f"{pg_cluster.PASSWORD_ROLE}:***@" in mesh.location
    finally:
        mesh.backend.close()


# ---- the driver --------------------------------------------------------------------------------

BLOCK_PSYCOPG = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _Block())
"""


def test_a_missing_driver_is_exit_4_saying_what_to_install(cli: MeshRunner, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_PSYCOPG)
    env = {"PYTHONPATH": str(site), "DRASILL_MESH_DIR": ""}
    done = cli.run("--mesh-url", URL, "inbox", "--as", "bob", env=env, process=True)
    assert done.returncode == 4, done.stderr
    assert "pip install 'drasill-cli[postgres]'" in done.stderr
    assert done.stderr.count("\n") == 1
    done = cli.run("--mesh-url", URL, "inbox", "--as", "bob", "--json", env=env, process=True)
    assert json.loads(done.stdout)["error"]["code"] == "driver-missing"


PROBE = """
import atexit, sys
atexit.register(lambda: sys.__stderr__.write(
    "PSYCOPG " + str(any(m.split(".")[0] == "psycopg" for m in sys.modules)) + "\\n"))
sys.argv = ["mesh", *sys.argv[1:]]
from drasill_cli.cli.app import main
main()
"""


@pytest.mark.parametrize(
    "args", [("register", "bob"), ("send", "bob", "hi", "--as", "bob"), ("inbox", "--as", "bob")]
)
def test_a_directory_mesh_never_imports_the_driver(cli: MeshRunner, args: tuple[str, ...]) -> None:
    cli.json("register", "bob")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "PSYCOPG False" in done.stderr, done.stderr


# ---- failures: one exit-4 line naming the host and the fix, never the password -------------------


def test_an_unreachable_server_is_exit_4_naming_the_host(cli: MeshRunner) -> None:
    env = {"DRASILL_MESH_DIR": ""}
    done = cli.run("--mesh-url", NO_SERVER, "inbox", "--as", "bob", env=env)
    assert done.returncode == 4
    assert "127.0.0.1:1" in done.stderr
    assert "unreachable" in done.stderr
    assert "start the server" in done.stderr
    assert done.stderr.count("\n") == 1
    assert "hunter2" not in done.stderr + done.stdout
    done = cli.run("inbox", "--as", "bob", "--json", env={**env, "DRASILL_MESH_URL": NO_SERVER})
    assert json.loads(done.stdout)["error"]["code"] == "database-unreachable"
    assert "hunter2" not in done.stdout + done.stderr


def test_a_refused_login_is_exit_4_without_the_password(cli: MeshRunner, pg_mesh_url: str) -> None:
    url = with_login(pg_mesh_url, pg_cluster.PASSWORD_ROLE, "Wr0ng-pa55word")
    done = cli.run("--mesh-url", url, "inbox", "--as", "bob", env={"DRASILL_MESH_DIR": ""})
    assert done.returncode == 4
    assert "refused the login" in done.stderr
    assert "pg_hba.conf" in done.stderr
    assert "Wr0ng-pa55word" not in done.stderr + done.stdout


def test_a_missing_database_is_exit_4_saying_how_to_create_it(pg_url: str) -> None:
    url = pg_url.replace("/postgres?", "/no_such_db?", 1)
    with pytest.raises(MeshUnusable, match="createdb") as caught:
        Mesh.open(config=Config(), mesh_url=url)
    assert caught.value.code == "database-missing"


def test_a_missing_privilege_is_exit_4_naming_the_grant(pg_url: str) -> None:
    schema = "locked_down"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {pg_cluster.PASSWORD_ROLE}")
    url = with_schema(with_login(pg_url, pg_cluster.PASSWORD_ROLE, pg_cluster.PASSWORD), schema)
    with pytest.raises(MeshUnusable, match="privilege") as caught:
        Mesh.open(config=Config(), mesh_url=url)
    assert caught.value.code == "database-privilege-missing"
    assert pg_cluster.PASSWORD not in caught.value.message


def test_a_connection_lost_midway_is_exit_4_and_rolls_back(pg_mesh_url: str) -> None:
    mesh = Mesh.open(config=Config(), mesh_url=pg_mesh_url)
    from drasill_cli.backends.postgres import PostgresBackend

    backend = mesh.backend
    assert isinstance(backend, PostgresBackend)
    pid = backend.db.conn.info.backend_pid
    with (
        pytest.raises(MeshUnusable, match="lost midway") as caught,
        backend.db.transaction() as cur,
    ):
        cur.execute("INSERT INTO mesh_audit (event) VALUES ('half-done')")
        with psycopg.connect(pg_mesh_url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        cur.execute("SELECT 1")
    assert caught.value.code == "database-connection-lost"
    assert caught.value.exit_code == 4
    reopened = Mesh.open(config=Config(), mesh_url=pg_mesh_url).backend
    assert isinstance(reopened, PostgresBackend)
    with reopened.db.transaction() as cur:
        cur.execute("SELECT count(*) FROM mesh_audit")
        assert cur.fetchone() == (0,)
    reopened.close()


# ---- mesh doctor on a URL mesh -------------------------------------------------------------------


def test_doctor_shows_a_reachable_database_with_its_url_masked(
    cli: MeshRunner, pg_mesh_url: str
) -> None:
    url = with_login(pg_mesh_url, pg_cluster.PASSWORD_ROLE, pg_cluster.PASSWORD)
    env = {"DRASILL_MESH_DIR": ""}
    done = cli.run("--mesh-url", url, "doctor", "--json", env=env)
    report = json.loads(done.stdout)
    assert pg_cluster.PASSWORD not in done.stdout + done.stderr
    assert report["mesh_dir"] is None
    assert report["mesh_url"] == mask_url(url)
    assert report["mesh_url"].startswith(f"postgresql://{pg_cluster.PASSWORD_ROLE}:***@/")
    check = next(c for c in report["checks"] if c["name"] == "mesh-database")
    assert check["status"] == "ok", check
    assert "mesh-dir" not in {c["name"] for c in report["checks"]}
    done = cli.run("doctor", env={**env, "DRASILL_MESH_URL": url})
    assert pg_cluster.PASSWORD not in done.stdout + done.stderr
    assert f"mesh url {mask_url(url)}" in done.stdout


def test_doctor_fails_an_unreachable_database_naming_the_host(cli: MeshRunner) -> None:
    done = cli.run("--mesh-url", NO_SERVER, "doctor", "--json", env={"DRASILL_MESH_DIR": ""})
    assert done.returncode == 1
    assert "hunter2" not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["mesh_url"] == "postgresql://mesh:***@127.0.0.1:1/postgres"
    check = next(c for c in report["checks"] if c["name"] == "mesh-database")
    assert check["status"] == "fail"
    assert "127.0.0.1:1" in check["detail"]
    assert "start the server" in check["fix"]


def test_doctor_names_a_scheme_no_backend_serves(clean_env: pytest.MonkeyPatch) -> None:
    """Doctor asks the registry too: one required failure naming the schemes, nothing opened."""
    from drasill_cli import doctor

    report = doctor.run(mesh_url="sqlite://me:hunter2-secret@host/mesh.db")
    assert report["ok"] is False
    [where] = [check for check in report["checks"] if check["name"] == "mesh-dir"]
    assert where["status"] == "fail" and where["required"]
    assert "postgresql:// or postgres://" in where["detail"]
    assert "hunter2" not in json.dumps(report)


def test_a_location_is_a_frozen_value_that_never_shows_its_url(tmp_path: Path) -> None:
    at = Location.of_url("postgresql://me:hunter2-secret@host/db", "--mesh-url")
    assert at == Location.of_url("postgresql://me:hunter2-secret@host/db", "[store] url")
    assert len({at, Location.of_url(at.url or "")}) == 1
    assert at.scheme == "postgresql" and Location.directory(tmp_path).scheme == ""
    assert "hunter2" not in repr(at) and "hunter2" not in str(at)
    with pytest.raises(AttributeError):
        at.url = "postgresql://elsewhere/db"  # refused at run time: a Location is frozen
    with pytest.raises(ValueError, match="exactly one"):
        Location(path=tmp_path, url="postgresql://host/db")
