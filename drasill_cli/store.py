"""The store: the mesh directory as one file per record, behind one small interface.

Everything the mesh keeps goes through `Store`, so a backend for meshes that span machines can
replace `FileStore` without touching the feature modules. Paths given to the store are relative,
slash-separated record names such as `agents/alpha.json`.

Guarantees of `FileStore`:
- writes are atomic: a temp file in the same directory, fsync, rename, fsync of the directory, so
  a reader sees a whole file or none, and a killed writer leaves at most a `.tmp-*` file that
  `prune` clears;
- with `fsync=False` (config `[store] fsync = false`) every flush is skipped: writes stay atomic
  (a killed process never leaves a half record), but a power loss or kernel crash may lose the
  last writes, the guarantee of SQLite in WAL mode with `synchronous = NORMAL`;
- files are opened with O_NOFOLLOW, so a planted symlink is never followed;
- read-modify-write sections hold a filelock on a sidecar `.lock` file that is never deleted;
- a file that does not parse is moved to `quarantine/` and reported through `warnings`,
  never fatal and never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from drasill_cli import SCHEMA_VERSION, clock
from drasill_cli.errors import MeshError, MeshUnusable

TMP_PREFIX = ".tmp-"
LOCK_DIR = ".locks"
QUARANTINE_DIR = "quarantine"
META_FILE = "meta.json"
# How often `publish` recreates a link's folder that a concurrent `remove_dir` keeps removing.
_LINK_RETRIES = 50


class StoreFull(MeshError):
    """The file system refused a write (full disk, quota, read-only): nothing was written."""

    exit_code = 4
    default_code = "store-write-failed"


class Store(Protocol):
    """The operations the feature modules need from a mesh backend."""

    root: Path
    warnings: list[str]
    read_only: bool

    def read(self, rel: str) -> dict[str, Any] | None:
        """The record at `rel`, or None when it is absent or was quarantined."""
        ...

    def write(self, rel: str, record: dict[str, Any]) -> None:
        """Replace (or create) the record at `rel` atomically."""
        ...

    def create(self, rel: str, record: dict[str, Any]) -> bool:
        """Create the record only if `rel` does not exist yet; False if it did."""
        ...

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Store raw bytes (attachments) atomically."""
        ...

    def remove(self, rel: str) -> bool:
        """Delete `rel`; False if it was already gone."""
        ...

    def move(self, src: str, dst: str) -> bool:
        """Rename `src` to `dst` atomically and durably; False if `src` was gone (someone else
        moved it): of several processes moving the same record, exactly one succeeds."""
        ...

    def publish(
        self, data: bytes, links: Sequence[str], keep_as: str, *, staging: str | None = None
    ) -> None:
        """Store `data` once under several new names, without a lock.

        The bytes are written and flushed once, in a temp file in `staging` (default: the
        folder of `keep_as`); each of `links` (which must not exist yet) is then made a hard
        link to it, its folder recreated if a concurrent `remove_dir` took it away; last, the
        temp is renamed to `keep_as`. Readers see each name whole or not at all. On return the
        `links` are durable; `keep_as` is the writer's own copy, and its folder is not flushed:
        after a power loss it may be missing or still under its temp name, which `prune` clears.
        """
        ...

    def link(self, src: str, dst: str) -> None:
        """Make `dst` another name of the file `src` (a hard link), durably."""
        ...

    def scan(
        self, rel_dir: str, suffix: str = ".json", *, depth: int = 0, remove_empty: bool = False
    ) -> Iterator[str]:
        """Names (relative to the mesh) of the files ending in `suffix` under `rel_dir`, lazily.

        Each folder is listed sorted, and a subfolder is descended into at its place in that
        order, at most `depth` levels down, so names come in the order of their paths. With
        `remove_empty`, each subfolder is removed after it was passed over, if it is empty.
        """
        ...

    def remove_dir(self, rel_dir: str) -> bool:
        """Remove the folder `rel_dir` if it is empty; False if it is absent or not empty."""
        ...

    def names(self, rel_dir: str, suffix: str = ".json") -> list[str]:
        """Names in `rel_dir` ending in `suffix` (temp files excluded), sorted."""
        ...

    def lock(self, name: str, timeout: float = -1) -> contextlib.AbstractContextManager[object]:
        """An exclusive lock on the sidecar `.locks/<name>.lock` for read-modify-write."""
        ...

    def touch(self, rel: str) -> None:
        """Create `rel` empty or set its modification time to now (a heartbeat)."""
        ...

    def mtime(self, rel: str) -> float | None:
        """Modification time of `rel`, or None when it is absent."""
        ...

    def append(self, rel: str, data: bytes) -> int:
        """Append `data` with one write on an O_APPEND file; returns the new size."""
        ...

    def ensure_dir(self, rel_dir: str) -> Path:
        """Create the folder `rel_dir` with the mesh's mode if needed."""
        ...

    def quarantine(self, rel: str, reason: str) -> None:
        """Move a damaged record aside (never delete it) and report it in `warnings`."""
        ...

    def read_only_view(self) -> Store:
        """The same mesh, refusing every write (for dry runs)."""
        ...

    def path(self, rel: str) -> Path:
        """The real file-system path of `rel`, for tools that must see a file (attachments)."""
        ...


class FileStore:
    """`Store` on a local directory tree."""

    def __init__(self, root: Path, *, group_shared: bool = False, fsync: bool = True) -> None:
        self.root = root
        self.group_shared = group_shared
        self.fsync = fsync
        self.dir_mode = 0o2770 if group_shared else 0o700
        self.file_mode = 0o660 if group_shared else 0o600
        self.warnings: list[str] = []
        self._known_dirs: dict[str, Path] = {}
        self._materialized = False
        self._verified_dirs: set[str] = set()
        self.read_only = False

    def read_only_view(self) -> FileStore:
        """The same mesh, refusing every write: for dry runs that must change nothing."""
        view = FileStore(self.root, group_shared=self.group_shared, fsync=self.fsync)
        view.read_only = True
        view.warnings = self.warnings
        return view

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError("a write was attempted through a read-only store view")

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *, group_shared: bool = False, fsync: bool = True) -> FileStore:
        """Open the mesh at `root` after checking it is safe.

        A mesh that does not exist yet is created by the first write, so a command refused
        for bad input leaves no trace on disk. `fsync=False` skips every flush to disk.
        """
        store = cls(root, group_shared=group_shared, fsync=fsync)
        try:
            os.stat(root)
        except NotADirectoryError:
            raise store._inside_a_file() from None
        except FileNotFoundError:
            return store
        store.check_safety()
        store._check_meta()
        return store

    def _materialize(self) -> None:
        """Create the mesh directory and its meta file before the first write."""
        if self._materialized:
            return
        self._writable()
        self._materialized = True
        self._create_root()
        self.check_safety()
        if not os.path.lexists(self.root / META_FILE):
            self.create(META_FILE, {"schema_version": SCHEMA_VERSION, "created_at": clock.iso()})

    def _create_root(self) -> None:
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise self._inside_a_file() from None
        except OSError as exc:
            raise self._uncreatable(exc) from exc
        try:
            os.mkdir(self.root, self.dir_mode)
        except FileExistsError:
            return
        except OSError as exc:
            raise self._uncreatable(exc) from exc
        os.chmod(self.root, self.dir_mode)

    def _uncreatable(self, exc: OSError) -> MeshUnusable:
        return MeshUnusable(
            f"cannot create mesh directory {self.root}: {exc.strerror}; "
            "choose another one with --mesh-dir or DRASILL_MESH_DIR",
            code="mesh-dir-unwritable",
        )

    def _inside_a_file(self) -> MeshUnusable:
        return MeshUnusable(
            f"mesh path {self.root} lies inside a file, not a directory; "
            "choose another --mesh-dir or DRASILL_MESH_DIR",
            code="mesh-dir-not-directory",
        )

    def check_safety(self) -> None:
        """Refuse (exit 4) a mesh dir that is not ours or that others may write."""
        try:
            info = os.stat(self.root)
        except FileNotFoundError as exc:
            raise MeshUnusable(
                f"mesh directory {self.root} does not exist", code="mesh-dir-missing"
            ) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise MeshUnusable(
                f"mesh path {self.root} is not a directory; remove it or choose another --mesh-dir",
                code="mesh-dir-not-directory",
            )
        if info.st_uid != os.geteuid() and not self._shared_with_me(info):
            raise MeshUnusable(
                f"mesh directory {self.root} is owned by uid {info.st_uid}, not by you "
                f"(uid {os.geteuid()}); use a mesh directory of your own (--mesh-dir) "
                f"or have its owner run: chown {os.geteuid()} {self.root}",
                code="unsafe-owner",
            )
        if info.st_mode & stat.S_IWOTH:
            raise MeshUnusable(
                f"mesh directory {self.root} is writable by every user; fix it with: "
                f"chmod o-rwx {self.root}",
                code="unsafe-permissions",
            )
        if info.st_mode & stat.S_IWGRP and not self.group_shared:
            raise MeshUnusable(
                f"mesh directory {self.root} is group-writable but group_shared is off; fix it "
                f"with: chmod g-w {self.root}, or set group_shared = true in the config",
                code="unsafe-permissions",
            )

    def _shared_with_me(self, info: os.stat_result) -> bool:
        """A group-shared mesh of another user is ours too when it is setgid to our group."""
        if not self.group_shared or not info.st_mode & stat.S_ISGID:
            return False
        return info.st_gid == os.getegid() or info.st_gid in os.getgroups()

    def _check_meta(self) -> None:
        meta = self.read(META_FILE)
        if meta is None:
            self._materialized = False  # a quarantined meta file is rewritten by the next write
            return
        version = meta.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise MeshUnusable(
                f"mesh directory {self.root} has store format {version!r}, newer than this "
                f"mesh ({SCHEMA_VERSION}); upgrade drasill-cli",
                code="schema-too-new",
            )

    # ---- helpers -------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """The real path of `rel` (no `..` or absolute parts allowed)."""
        return Path(self._fspath(rel))

    def _fspath(self, rel: str) -> str:
        """`path` as a string, cheaper on the hot paths (send, consume)."""
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"record name escapes the mesh: {rel!r}")
        return os.path.join(self.root, rel)

    def _refuse_symlinked_dirs(self, rel_dir: str) -> None:
        """Reads never wander outside the mesh through a folder replaced by a symlink."""
        if not rel_dir or rel_dir in self._verified_dirs:
            return
        current = self.root
        for part in rel_dir.split("/"):
            current = current / part
            try:
                info = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat.S_ISLNK(info.st_mode):
                raise MeshUnusable(
                    f"{current} should be a directory of the mesh but is a symlink; "
                    "move it away and run the command again",
                    code="unsafe-entry",
                )
        self._verified_dirs.add(rel_dir)

    def ensure_dir(self, rel_dir: str) -> Path:
        """Create `rel_dir` (and parents) with the mesh's mode; refuse symlinked folders."""
        known = self._known_dirs.get(rel_dir)
        if known is not None:
            return known
        target = self.path(rel_dir)
        self._writable()
        self._materialize()
        if not self._make_dirs(rel_dir, durable=False):
            raise _not_a_folder(target)
        self._known_dirs[rel_dir] = target
        self._verified_dirs.add(rel_dir)  # `_make_dirs` refused anything but real folders
        return target

    def _make_dirs(self, rel_dir: str, *, durable: bool) -> bool:
        """Create each missing folder of `rel_dir` with the mesh's mode (with `durable`, each
        new one is flushed into its parent). False when a folder vanished midway, taken by a
        concurrent `remove_dir`: the caller retries. A symlink or file in the way is refused."""
        current = str(self.root)
        for part in rel_dir.split("/"):
            parent, current = current, os.path.join(current, part)
            try:
                os.mkdir(current, self.dir_mode)
            except FileExistsError:
                try:
                    kind = os.lstat(current).st_mode
                except FileNotFoundError:
                    return False
                if not stat.S_ISDIR(kind):
                    raise _not_a_folder(Path(current)) from None
                continue
            except FileNotFoundError:
                return False
            try:
                os.chmod(current, self.dir_mode)
            except FileNotFoundError:  # removed the instant after it was made
                return False
            if durable:
                self._fsync_dir(parent, missing_ok=True)
        return True

    def _fsync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    def _fsync_dir(self, directory: str | Path, *, missing_ok: bool = False) -> None:
        """Make the renames and links in `directory` durable (no-op with `fsync=False`);
        `missing_ok` where a concurrent `remove_dir` may have taken the folder."""
        if not self.fsync:
            return
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_temp(self, directory: Path, name: str, data: bytes) -> str:
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, self.file_mode)
            try:
                self._exact_mode(fd)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                self._fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _write_error(directory / name, exc) from exc
        return tmp

    def _place(self, rel: str, data: bytes, *, exclusive: bool) -> bool:
        self._writable()
        self._materialize()
        parent, _, name = rel.rpartition("/")
        directory = self.ensure_dir(parent) if parent else self.root
        tmp = self._write_temp(directory, name, data)
        final = directory / name
        try:
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return False
            else:
                os.rename(tmp, final)
        except OSError as exc:
            raise _write_error(final, exc) from exc
        finally:
            if exclusive:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._fsync_dir(directory)
        return True

    # ---- Store interface -----------------------------------------------------------------

    def read(self, rel: str) -> dict[str, Any] | None:
        """The record at `rel`; damaged files are quarantined and None is returned."""
        target = self.path(rel)
        self._refuse_symlinked_dirs(rel.rpartition("/")[0])
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.quarantine(rel, "is a symlink")
                return None
            raise
        try:
            with os.fdopen(fd, "rb") as handle:
                raw = handle.read()
        except IsADirectoryError:
            self.quarantine(rel, "is a directory")
            return None
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.quarantine(rel, "does not parse as JSON")
            return None
        if not isinstance(record, dict):
            self.quarantine(rel, "is not a JSON object")
            return None
        return record

    def write(self, rel: str, record: dict[str, Any]) -> None:
        """Replace the record atomically."""
        self._place(rel, encode_record(record), exclusive=False)

    def create(self, rel: str, record: dict[str, Any]) -> bool:
        """Create the record only if absent: one atomic link(2), so exactly one creator wins."""
        return self._place(rel, encode_record(record), exclusive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Store raw bytes atomically."""
        self._place(rel, data, exclusive=False)

    def remove(self, rel: str) -> bool:
        """Delete the file; False if it was already gone."""
        self._writable()
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            return False
        return True

    def move(self, src: str, dst: str) -> bool:
        """Atomic rename, then both folders flushed; False when `src` is gone, e.g. taken by a
        concurrent consumer (rename(2) succeeds for exactly one of them)."""
        self._writable()
        parent = dst.rpartition("/")[0]
        if parent:
            self.ensure_dir(parent)
        source, target = self._fspath(src), self._fspath(dst)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _write_error(target, exc) from exc
        source_dir, target_dir = os.path.dirname(source), os.path.dirname(target)
        self._fsync_dir(target_dir)
        if source_dir != target_dir:
            self._fsync_dir(source_dir, missing_ok=True)
        return True

    def publish(
        self, data: bytes, links: Sequence[str], keep_as: str, *, staging: str | None = None
    ) -> None:
        """One flushed temp file, hard-linked to each of `links`, then renamed to `keep_as`.

        Only the folders of `links` are flushed: the renamed temp is the writer's own copy,
        and if a power loss forgets the rename, the file is left under its temp name (a link of
        the same, already flushed, data) for `prune` to clear.
        """
        self._writable()
        if not links:
            raise ValueError("publish needs at least one link")
        self._materialize()
        keep_path = self._fspath(keep_as)
        targets = [self._fspath(rel) for rel in links]
        keep_dir = keep_as.rpartition("/")[0]
        if keep_dir:
            self.ensure_dir(keep_dir)
        staging = keep_dir if staging is None else staging
        staging_dir = self.ensure_dir(staging) if staging else self.root
        tmp = self._write_temp(staging_dir, os.path.basename(targets[0]), data)
        try:
            for rel, target in zip(links, targets, strict=True):
                self._link_creating_folder(tmp, rel, target)
            os.rename(tmp, keep_path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _write_error(keep_path, exc) from exc
            raise
        for folder in dict.fromkeys(os.path.dirname(target) for target in targets):
            self._fsync_dir(folder, missing_ok=True)  # gone: a consumer took it all, flushed

    def _link_creating_folder(self, tmp: str, rel: str, target: str) -> None:
        """Hard-link `tmp` as `rel`, recreating its folder while a concurrent `remove_dir`
        keeps taking it away (consumers remove the empty shards they pass)."""
        for _ in range(_LINK_RETRIES):
            try:
                os.link(tmp, target)
            except FileNotFoundError:
                if not os.path.lexists(tmp):
                    raise
                self._make_dirs(rel.rpartition("/")[0], durable=True)
                continue
            except OSError as exc:
                raise _write_error(target, exc) from exc
            return
        raise MeshUnusable(
            f"could not write into {os.path.dirname(target)}: the folder kept disappearing; "
            "check the mesh directory with `mesh doctor`",
            code="store-write-failed",
        )

    def link(self, src: str, dst: str) -> None:
        """A hard link `dst` to the file `src`, its folder flushed."""
        self._writable()
        parent = dst.rpartition("/")[0]
        directory = self.ensure_dir(parent) if parent else self.root
        target = self.path(dst)
        try:
            os.link(self.path(src), target, follow_symlinks=False)
        except OSError as exc:
            raise _write_error(target, exc) from exc
        self._fsync_dir(directory)

    def scan(
        self, rel_dir: str, suffix: str = ".json", *, depth: int = 0, remove_empty: bool = False
    ) -> Iterator[str]:
        """Names under `rel_dir` ending in `suffix` (no temp files), in path order, lazily:
        a consumer that stops early lists only the first few folders."""
        self._refuse_symlinked_dirs(rel_dir)
        if remove_empty:
            self._writable()
        yield from self._scan(self._fspath(rel_dir), rel_dir, suffix, depth, remove_empty)

    def _scan(
        self, directory: str, rel_dir: str, suffix: str, depth: int, remove_empty: bool
    ) -> Iterator[str]:
        try:
            entries = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.startswith(TMP_PREFIX):
                continue
            if entry.endswith(suffix):
                yield f"{rel_dir}/{entry}"
            elif depth > 0:
                folder = os.path.join(directory, entry)
                yield from self._scan(folder, f"{rel_dir}/{entry}", suffix, depth - 1, remove_empty)
                if remove_empty:  # every entry was passed over: usually empty now
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
                        self._forget_dir(f"{rel_dir}/{entry}")

    def names(self, rel_dir: str, suffix: str = ".json") -> list[str]:
        """Sorted names of records in `rel_dir` (no temp files, no sidecar locks)."""
        self._refuse_symlinked_dirs(rel_dir)
        try:
            entries = os.listdir(self.path(rel_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = [e for e in entries if e.endswith(suffix) and not e.startswith(TMP_PREFIX)]
        found.sort()
        return found

    def remove_dir(self, rel_dir: str) -> bool:
        """rmdir(2): False when the folder is absent or not empty (nothing is deleted)."""
        self._writable()
        try:
            os.rmdir(self.path(rel_dir))
        except OSError:
            return False
        self._forget_dir(rel_dir)
        return True

    def _forget_dir(self, rel_dir: str) -> None:
        """A folder was removed: check it again should it be needed (and made) later."""
        self._known_dirs.pop(rel_dir, None)
        self._verified_dirs.discard(rel_dir)

    def lock(self, name: str, timeout: float = -1) -> contextlib.AbstractContextManager[object]:
        """A filelock on `.locks/<name>.lock`; the file is kept so exclusion never breaks."""
        from filelock import FileLock

        self._writable()
        directory = self.ensure_dir(LOCK_DIR)
        return FileLock(
            directory / f"{name}.lock",
            timeout=timeout,
            mode=self.file_mode,
            poll_interval=0.005,
            preserve_lock_file=True,
            thread_local=False,
        )

    def touch(self, rel: str) -> None:
        """Set the modification time to now, creating the file if needed."""
        self._writable()
        target = self.path(rel)
        try:
            os.utime(target, follow_symlinks=False)
        except FileNotFoundError:
            parent = rel.rpartition("/")[0]
            if parent:
                self.ensure_dir(parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, self.file_mode)
            try:
                self._exact_mode(fd)
            finally:
                os.close(fd)

    def _exact_mode(self, fd: int) -> None:
        """Give a file we created the mesh's mode, whatever the umask took away."""
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != self.file_mode and info.st_uid == os.geteuid():
            os.fchmod(fd, self.file_mode)

    def append(self, rel: str, data: bytes) -> int:
        """One write(2) on an O_APPEND descriptor: lines from many processes never interleave."""
        self._writable()
        parent = rel.rpartition("/")[0]
        if parent:
            self.ensure_dir(parent)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path(rel), flags, self.file_mode)
            try:
                self._exact_mode(fd)
                os.write(fd, data)
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as exc:
            raise _write_error(self.path(rel), exc) from exc

    def mtime(self, rel: str) -> float | None:
        """Modification time, or None."""
        try:
            return os.stat(self.path(rel), follow_symlinks=False).st_mtime
        except FileNotFoundError:
            return None

    # ---- damage handling -----------------------------------------------------------------

    def quarantine(self, rel: str, reason: str) -> None:
        """Move a damaged file aside, keep it, and report it in `warnings`."""
        if self.read_only:
            self.warnings.append(f"damaged file {rel} ({reason}); left in place by a read-only run")
            return
        self.ensure_dir(QUARANTINE_DIR)
        flat = rel.replace("/", "__")
        dest = f"{QUARANTINE_DIR}/{clock.iso().replace(':', '')}-{os.getpid()}-{flat}"
        if self.move(rel, dest):
            self.warnings.append(f"quarantined {rel} ({reason}); it was moved to {self.path(dest)}")


def encode_record(record: dict[str, Any]) -> bytes:
    """A record as stored: compact UTF-8 JSON (also each audit line, before its newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _not_a_folder(path: Path) -> MeshUnusable:
    return MeshUnusable(
        f"{path} should be a directory of the mesh but is a symlink or a file; move it away "
        "and run the command again",
        code="unsafe-entry",
    )


def _write_error(target: str | Path, exc: OSError) -> MeshError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return StoreFull(
            f"could not write {target}: {exc.strerror}; free disk space (or fix the file "
            "system) and run the command again; nothing was written",
        )
    return MeshUnusable(
        f"could not write {target}: {exc.strerror}; check the mesh directory with `mesh doctor`",
        code="store-write-failed",
    )
