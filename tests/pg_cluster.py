"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl from the server binaries, a
private unix socket directory, no TCP, run as an unprivileged user when we are root.

Used by `.ci/run` (`python -m tests.pg_cluster start DIR` prints the URL; `stop DIR`) and by
the session fixture in tests/conftest.py when DRASILL_TEST_PG_URL is not set. Standard library
only (it runs before the virtual environment exists).

The cluster has two roles: `mesh`, a superuser reached without a password (trust on the local
socket), and `mesh_pw` (password `s3cret-pw`, scram), for the tests of refused logins and of
passwords kept out of every message.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

PASSWORD_ROLE = "mesh_pw"  # noqa: S105 -- a role name, not a password
PASSWORD = "s3cret-pw"  # noqa: S105 -- a throwaway test cluster's role, on a private socket
PORT = 5432


def server_bindir() -> Path | None:
    """The newest installed server's bin directory (Debian's layout), or None."""

    def major(pg_ctl: str) -> int:
        version = Path(pg_ctl).parent.parent.name
        return int(version) if version.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=major)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _server_user() -> str | None:
    """Whom the server runs as: None (ourselves) unless we are root, then `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
        )
    return "postgres"


def _run(argv: list[str], user: str | None) -> None:
    done = subprocess.run(argv, user=user, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")


def url(base: Path, user: str = "mesh", database: str = "postgres") -> str:
    """A libpq URI for the cluster under `base` (its socket directory as the host)."""
    return f"postgresql://{user}@/{database}?host={base / 'socket'}&port={PORT}"


def start(base: Path, *, durable: bool = False) -> str:
    """Make and start a cluster under `base` (empty or absent); its URL. The tests' cluster
    skips flushing (fsync, synchronous_commit, full_page_writes off); `durable` keeps the
    server's defaults (a commit returns once its WAL is on disk), as the benchmarks need."""
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")
    user = _server_user()
    data, socket = base / "data", base / "socket"
    base.mkdir(parents=True, exist_ok=True)
    for folder in (data, socket):
        folder.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        info = pwd.getpwnam(user)
        for folder in (base, data, socket):
            os.chown(folder, info.pw_uid, info.pw_gid)
        base.chmod(0o755)  # the server user must reach data/ and socket/
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "mesh",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        user,
    )
    hba = data / "pg_hba.conf"
    lines = [f"local all {PASSWORD_ROLE} scram-sha-256", "local all all trust"]
    _write_as(hba, "\n".join(lines) + "\n", user)
    _start_server(base, bindir, user, durable=durable)
    setup = (
        f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CREATE ON DATABASE postgres TO {PASSWORD_ROLE};"
    )
    # psql, not psycopg: .ci/run starts the cluster before the virtual environment exists.
    _run(
        [
            str(bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(socket),
            "-p",
            str(PORT),
            "-U",
            "mesh",
            "-d",
            "postgres",
            "-c",
            setup,
        ],
        None,
    )
    return url(base)


def _start_server(base: Path, bindir: Path, user: str | None, *, durable: bool = False) -> None:
    """Start the server of the cluster under `base` (made by `start`) and wait until it accepts;
    `durable` as in `start`."""
    flushing = (
        "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        if durable
        else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    options = (
        f"-c listen_addresses='' -c unix_socket_directories={base / 'socket'} -c port={PORT} "
        f"{flushing} -c max_connections=300"
    )
    _run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(base / "data"),
            "-l",
            str(base / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        ],
        user,
    )


def restart(base: Path, down_for: float) -> None:
    """Stop the server under `base` (fast: sessions are cut), keep it down `down_for` seconds,
    and start it again (the tests of a database restarted under running commands)."""
    import time

    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")
    user = _server_user()
    _run([str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"], user)
    time.sleep(down_for)
    _start_server(base, bindir, user)


def _write_as(path: Path, text: str, user: str | None) -> None:
    path.write_text(text)
    if user is not None:
        info = pwd.getpwnam(user)
        os.chown(path, info.pw_uid, info.pw_gid)


def stop(base: Path) -> None:
    """Stop the cluster under `base` (fast: sessions are cut) and remove it."""
    bindir = server_bindir()
    data = base / "data"
    if bindir is not None and (data / "postmaster.pid").exists():
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            user=_server_user(),
            capture_output=True,
            check=False,
        )
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pg_cluster start|stop DIR", file=sys.stderr)
        return 2
    base = Path(argv[1]).absolute()
    if argv[0] == "start":
        print(start(base))
    else:
        stop(base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
