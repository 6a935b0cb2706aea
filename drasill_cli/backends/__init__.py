"""Storage backends: each implements every interface of `drasill_cli.storage` in its own package.

`REGISTRY` is the one place that knows the backends: a `Location`'s scheme ("directory", or a
URL's scheme) picks an entry, and the entry opens the mesh (for use, read-only, or as it is for
`mesh doctor`), shows where it lives, and says what the backend can do (`spans_hosts`). Each
entry imports its package only when called, so a directory mesh never imports a database
driver and a URL mesh never touches a directory. Nothing outside this package branches on the
kind of a backend; only `drasill_cli.mesh` imports this package (tests/test_architecture.py).

Adding a backend: a package here implementing the interfaces, one `BackendEntry` below, one
harness in tests/harness.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drasill_cli.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from drasill_cli.config import Config
    from drasill_cli.location import Location
    from drasill_cli.storage import Backend
    from drasill_cli.storage.maintenance import Finding


class BackendEntry:
    """One backend: what it is called, the schemes that name it, what it can do, and how to
    check, open, diagnose and show a location of it (each imports the package when called).
    A plain class with slots: a dataclass or NamedTuple build would cost every `mesh` call
    a fraction of a millisecond more."""

    __slots__ = (
        "check",
        "diagnose",
        "directories",
        "kind",
        "open",
        "schemes",
        "shown",
        "spans_hosts",
    )

    def __init__(
        self,
        *,
        kind: str,
        schemes: tuple[str, ...],
        directories: bool,
        spans_hosts: bool,
        check: Callable[[Location], None],
        open: Callable[[Location, Config, bool], Backend],
        diagnose: Callable[[Location, Config], list[Finding]],
        shown: Callable[[Location], str],
    ) -> None:
        self.kind = kind
        # The URL schemes that name it (`postgresql` for postgresql://...); none for directories.
        self.schemes = schemes
        # Whether it serves a mesh directory (a `Location` with a path).
        self.directories = directories
        # A mesh reached from several machines at once (one watcher per host, not per mesh).
        self.spans_hosts = spans_hosts
        # Refuse (exit 2) a location this backend cannot use, before anything is opened.
        self.check = check
        # The mesh at the location; read_only: a view that never writes, nor makes the store.
        self.open = open
        # The backend's own diagnosis (`Maintenance.check`) of the mesh as it is, for doctor.
        self.diagnose = diagnose
        # Where the mesh lives, fit to print (a URL's password masked), without opening it.
        self.shown = shown


# ---- directory ---------------------------------------------------------------------------


def _path(location: Location) -> Path:
    if location.path is None:
        raise ValueError("not a directory location")
    return location.path


def _check_directory(location: Location) -> None:
    _path(location)


def _open_directory(location: Location, config: Config, read_only: bool) -> Backend:
    from drasill_cli.backends.directory import DirectoryBackend

    backend = DirectoryBackend.open(_path(location), config)
    return backend.read_only_view() if read_only else backend


def _diagnose_directory(location: Location, config: Config) -> list[Finding]:
    from drasill_cli.backends.directory import DirectoryBackend

    backend = DirectoryBackend.inspect(_path(location), config)
    try:
        return backend.maintenance.check()
    finally:
        backend.close()


def _show_directory(location: Location) -> str:
    return str(_path(location))


# ---- postgres ------------------------------------------------------------------------------


def _url(location: Location) -> str:
    if location.url is None:
        raise ValueError("not a URL location")
    return location.url


def _check_postgres(location: Location) -> None:
    from drasill_cli.backends.postgres.urls import check_url

    check_url(_url(location), location.source or "the mesh URL")


def _open_postgres(location: Location, config: Config, read_only: bool) -> Backend:
    from drasill_cli.backends.postgres import PostgresBackend

    return PostgresBackend.open(_url(location), config, read_only=read_only)


def _diagnose_postgres(location: Location, config: Config) -> list[Finding]:
    """Reachable and logged in, its tables made or current (opening does it), then the
    database's own diagnosis; a failure to open is one finding naming the host and the fix."""
    from drasill_cli.backends.postgres import PostgresBackend
    from drasill_cli.errors import MeshError
    from drasill_cli.storage.maintenance import Finding

    try:
        backend = PostgresBackend.open(_url(location), config)
    except MeshError as exc:  # one line naming the host and the fix, never the password
        fix = exc.message.rpartition("; ")[2] if "; " in exc.message else "see the message"
        return [Finding("mesh-database", "fail", exc.message, fix, required=True)]
    try:
        return backend.maintenance.check()
    finally:
        backend.close()


def _show_postgres(location: Location) -> str:
    from drasill_cli.backends.postgres.urls import mask_url

    return mask_url(_url(location))


REGISTRY: tuple[BackendEntry, ...] = (
    BackendEntry(
        kind="directory",
        schemes=(),
        directories=True,
        spans_hosts=False,
        check=_check_directory,
        open=_open_directory,
        diagnose=_diagnose_directory,
        shown=_show_directory,
    ),
    BackendEntry(
        kind="postgres",
        schemes=("postgresql", "postgres"),
        directories=False,
        spans_hosts=True,
        check=_check_postgres,
        open=_open_postgres,
        diagnose=_diagnose_postgres,
        shown=_show_postgres,
    ),
)


def url_schemes() -> list[str]:
    """Every URL scheme some backend serves, as typed (`postgresql://`, ...)."""
    return [f"{scheme}://" for entry in REGISTRY for scheme in entry.schemes]


def entry_for(location: Location) -> BackendEntry:
    """The backend serving `location`, its location checked; an unknown scheme or a location
    the backend cannot use is refused (exit 2) without quoting a URL (it may carry a
    password)."""
    scheme = location.scheme
    for entry in REGISTRY:
        if entry.directories if location.path is not None else scheme in entry.schemes:
            entry.check(location)
            return entry
    where = location.source or "the mesh URL"
    shown = f"its scheme is {scheme[:20]!r}" if scheme else "it has no scheme"
    raise InvalidInput(
        f"{where} names no kind of mesh this version knows ({shown}); a mesh lives in a "
        f"directory or at a URL starting with {' or '.join(url_schemes())}; give a libpq URI "
        "such as postgresql://user@host:5432/dbname, or a directory (--mesh-dir)",
        code="invalid-mesh-url",
    )


def entry_of_kind(kind: str) -> BackendEntry:
    """The entry of an opened backend (`Backend.kind`)."""
    for entry in REGISTRY:
        if entry.kind == kind:
            return entry
    raise LookupError(f"no backend of kind {kind!r}")


def open_backend(location: Location, config: Config, *, read_only: bool = False) -> Backend:
    """The mesh at `location`, as `config.resolve_mesh_location` gives it (created by its first
    write; a database's tables on first use, unless `read_only`). `read_only`: a view that
    never writes, not even to make or migrate the store. Exit 2 for a location no backend
    serves, exit 4 when the backend cannot be used (a missing driver, a database down)."""
    return entry_for(location).open(location, config, read_only)


def diagnose(location: Location, config: Config) -> list[Finding]:
    """The backend's own diagnosis of the mesh at `location` as it is, for `mesh doctor`: what
    opening it would refuse, and why (a directory is never created here)."""
    return entry_for(location).diagnose(location, config)


def shown_location(location: Location) -> str:
    """Where a mesh lives, fit to print, without opening it: a directory, or a URL with its
    password masked. Refuses (exit 2) a location no backend serves."""
    return entry_for(location).shown(location)
