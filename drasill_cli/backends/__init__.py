"""Storage backends: each implements every interface of `drasill_cli.storage` in its own package.

`open_backend` is the one place that picks a backend, so a directory mesh never imports a
database driver and a URL mesh never touches a directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drasill_cli.config import Config
    from drasill_cli.storage import Backend


def open_backend(location: Path | str, config: Config, *, read_only: bool = False) -> Backend:
    """The mesh at `location`: a directory (a `Path`) or a PostgreSQL URL (a `str`), as
    `config.resolve_mesh_location` gives it. Only a URL imports the database driver.
    `read_only`: a view that never writes, not even to make or migrate the store."""
    if isinstance(location, str):
        return open_postgres(location, config, read_only=read_only)
    backend = open_directory(location, config)
    return backend.read_only_view() if read_only else backend


def open_postgres(url: str, config: Config, *, read_only: bool = False) -> Backend:
    """The PostgreSQL mesh at `url` (its tables made on first use, unless `read_only`); exit 4
    when the driver is missing or the database cannot be used."""
    from drasill_cli.backends.postgres import PostgresBackend

    return PostgresBackend.open(url, config, read_only=read_only)


def open_directory(root: Path, config: Config) -> Backend:
    """The directory mesh at `root` (created by its first write)."""
    from drasill_cli.backends.directory import DirectoryBackend

    return DirectoryBackend.open(root, config)


def inspect_directory(root: Path, config: Config) -> Backend:
    """The directory mesh at `root` as it is, read-only, nothing checked or refused (for
    `mesh doctor`: `maintenance.check` says what `open_directory` would refuse, and why)."""
    from drasill_cli.backends.directory import DirectoryBackend

    return DirectoryBackend.inspect(root, config)


def shown_location(location: Path | str) -> str:
    """Where a mesh lives, fit to print, without opening it: a directory, or a URL with its
    password masked."""
    if isinstance(location, Path):
        return str(location)
    from drasill_cli.backends.postgres.urls import mask_url

    return mask_url(location)


def check_url(url: str, where: str) -> None:
    """Refuse (exit 2) a PostgreSQL URL its driver cannot read, without quoting it."""
    from drasill_cli.backends.postgres.urls import check_url as check

    check(url, where)
