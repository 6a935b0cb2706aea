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


def open_directory(root: Path, config: Config) -> Backend:
    """The directory mesh at `root` (created by its first write)."""
    from drasill_cli.backends.directory import DirectoryBackend

    return DirectoryBackend.open(root, config)


def inspect_directory(root: Path, config: Config) -> Backend:
    """The directory mesh at `root` as it is, read-only, nothing checked or refused (for
    `mesh doctor`: `maintenance.check` says what `open_directory` would refuse, and why)."""
    from drasill_cli.backends.directory import DirectoryBackend

    return DirectoryBackend.inspect(root, config)
