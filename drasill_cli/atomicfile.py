"""Files written whole or not at all, never through a link: the one writer of the directory
store and of the PostgreSQL attachment cache, so their guarantees cannot drift apart.

- `write_new(folder, name, data, mode)` makes a new file `name` in the open folder `folder`
  (descriptor-relative: no path is walked again), with `O_CREAT | O_EXCL | O_NOFOLLOW`: never
  an existing file, never through a link. It has exactly `mode` whatever the umask took away,
  holds all of `data`, and is flushed to disk (`fsync=False` skips that); on any failure it is
  removed again and the error raised.
- `replace(folder, name, data, mode, temp=...)` writes `data` as the temp file `temp`
  (`write_new`) and renames it over `name` (in `folder`, or from `temp_folder` into `folder`):
  a reader sees the old content or the new, never a part. The temp file is removed on failure.

Plain `os` calls only (a foundation module: it imports nothing of the mesh).
"""

from __future__ import annotations

import contextlib
import os
import stat

NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_new(folder: int, name: str, data: bytes, mode: int, *, fsync: bool = True) -> None:
    """`data` as the new file `name` in `folder`, with `mode`, flushed unless `fsync` is False."""
    fd = os.open(name, NEW_FILE, mode, dir_fd=folder)
    try:
        try:
            info = os.fstat(fd)
            # Whatever the umask took away; a file made on our behalf by another owner (a
            # squashed root on NFS) keeps the mode it was given.
            if stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.geteuid():
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
        raise


def replace(
    folder: int,
    name: str,
    data: bytes,
    mode: int,
    *,
    temp: str,
    temp_folder: int | None = None,
    fsync: bool = True,
) -> None:
    """`data` as `name` in `folder`, whole or not at all: the temp file `temp` (made in
    `temp_folder`, default `folder`, by `write_new`) renamed over it."""
    staging = folder if temp_folder is None else temp_folder
    write_new(staging, temp, data, mode, fsync=fsync)
    try:
        os.rename(temp, name, src_dir_fd=staging, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=staging)
        raise
