"""`FileStore`: the directory backend's file primitive, one file per record.

The directory backend's interface modules (mailbox, board, presence, ...) keep their records
through it; feature modules never see it. Paths given to the store are relative,
slash-separated record names such as `agents/alpha.json` (`layout.py` names them).

Guarantees of `FileStore`:
- writes are atomic: a temp file in the same directory, fsync, rename, fsync of the directory, so
  a reader sees a whole file or none, and a killed writer leaves at most a `.tmp-*` file that
  `prune` clears;
- with `fsync=False` (config `[store] fsync = false`) every flush is skipped: writes stay atomic
  (a killed process never leaves a half record), but a power loss or kernel crash may lose the
  last writes, the guarantee of SQLite in WAL mode with `synchronous = NORMAL`;
- every folder of a path is opened from its parent's descriptor (openat with O_NOFOLLOW |
  O_DIRECTORY), at every depth and anew for every operation, and its owner and mode are
  checked on that descriptor; files are then opened (O_NOFOLLOW), linked, renamed and removed
  relative to their folder's descriptor, so a planted symlink is never followed and no check
  outlives the descriptor it was made on;
- read-modify-write sections hold a flock(2) on a sidecar `.lock` file that is never deleted
  (opened without following links; anything else in its place is quarantined);
- a file that does not parse is moved to `quarantine/` and reported through `warnings`,
  never fatal and never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from drasill_cli import SCHEMA_VERSION, atomicfile, clock

# Re-exported: the directory backend's modules take the store's errors from the store.
from drasill_cli.errors import Busy as Busy  # noqa: PLC0414 (explicit re-export)
from drasill_cli.errors import MeshError, MeshUnusable
from drasill_cli.errors import StoreFull as StoreFull  # noqa: PLC0414 (explicit re-export)
from drasill_cli.errors import io_error as io_error  # noqa: PLC0414 (explicit re-export)
from drasill_cli.models import RecordError
from drasill_cli.storage.exclusion import refuse_inside

T = TypeVar("T")

TMP_PREFIX = ".tmp-"
# Every temp file the store writes lives here (then is renamed or linked into place), so the
# sweep of killed writers' leftovers looks in this one folder and nowhere else.
STAGING_DIR = "staging"
TEMP_NAME_RE = re.compile(r"\.tmp-[0-9]+-[0-9a-f]{8}-")
LOCK_DIR = ".locks"
QUARANTINE_DIR = "quarantine"
META_FILE = "meta.json"
MESH_KIND = "drasill-mesh"
# The largest record read; a bigger file is quarantined unread (`Mesh.open` raises the bound
# for a large `messages.max_body_bytes`).
MAX_RECORD_BYTES = 8 * 1024 * 1024
_LOCK_POLL_S = 0.005
# The folders above the mesh directory that `mesh` creates: never writable by others, whatever
# the umask (which may take more away).
PARENT_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# What open(2) with O_NOFOLLOW | O_DIRECTORY says of a link or a file (Linux: ENOTDIR).
_NOT_A_FOLDER = (errno.ENOTDIR, errno.ELOOP)
# How often `publish` recreates a link's folder that a concurrent `remove_dir` keeps removing.
_LINK_RETRIES = 50


class FileStore:
    """`Store` on a local directory tree."""

    def __init__(
        self,
        root: Path,
        *,
        group_shared: bool = False,
        fsync: bool = True,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.root = root
        self.max_record_bytes = max_record_bytes
        self.group_shared = group_shared
        self.fsync = fsync
        self.dir_mode = 0o2770 if group_shared else 0o700
        self.file_mode = 0o660 if group_shared else 0o600
        self.warnings: list[str] = []
        self._root_path = os.fspath(root)
        self._euid = os.geteuid()
        # Mode bits that make a folder unsafe (checked in full when one is set, or the owner
        # is another user: a group-shared mesh's member, or not).
        self._unsafe_bits = stat.S_IWOTH | (0 if group_shared else stat.S_IWGRP)
        self._materialized = False
        # Folders that scans under way hold open, by name: (descriptor, thread). See `_held_copy`.
        self._held: dict[str, tuple[int, int]] = {}
        self.read_only = False
        self._boot_lock = threading.RLock()
        self._booting = False

    def read_only_view(self) -> FileStore:
        """The same mesh, refusing every write: for dry runs that must change nothing."""
        view = FileStore(
            self.root,
            group_shared=self.group_shared,
            fsync=self.fsync,
            max_record_bytes=self.max_record_bytes,
        )
        view.read_only = True
        view.warnings = self.warnings
        return view

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError("a write was attempted through a read-only store view")

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        group_shared: bool = False,
        fsync: bool = True,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> FileStore:
        """Open the mesh at `root` after checking it is safe and is a mesh.

        A mesh that does not exist yet is created by the first write, so a command refused
        for bad input leaves no trace on disk; an empty folder becomes a mesh the same way.
        A folder with other content is a mesh only with the mesh's own marker (`meta.json`):
        anything else is refused and left untouched. `fsync=False` skips every flush to disk.
        """
        store = cls(root, group_shared=group_shared, fsync=fsync, max_record_bytes=max_record_bytes)
        try:
            info = os.lstat(root)
        except NotADirectoryError:
            raise store._inside_a_file() from None
        except FileNotFoundError:
            return store
        except OSError as exc:
            raise io_error("open the mesh directory", root, exc) from exc
        if stat.S_ISLNK(info.st_mode):
            raise store._root_is_a_link()
        store.check_safety()
        store._check_meta()
        return store

    def _materialize(self) -> None:
        """Create the mesh directory and its marker before the first write.

        Threads of one process wait for the one creating it, so none writes into the folder
        before the marker is there (which would make the folder look like it is not a mesh).
        """
        if self._materialized:
            return
        self._writable()
        with self._boot_lock:
            if self._materialized or self._booting:
                return  # done meanwhile, or this thread's own nested call while creating it
            self._booting = True
            try:
                self._create_root()
                self.check_safety()
                self._check_meta()  # a folder that filled up meanwhile is still not adopted
                if not os.path.lexists(self.root / META_FILE):
                    meta = {
                        "kind": MESH_KIND,
                        "schema_version": SCHEMA_VERSION,
                        "created_at": clock.iso(),
                    }
                    self.create(META_FILE, meta)
                self._materialized = True
            finally:
                self._booting = False

    def _create_root(self) -> None:
        """The mesh directory with the mesh's mode, and each missing folder above it with at
        most 0755 (`mkdir -p` would give 0777 under umask 000: a folder anyone could swap)."""
        missing: list[Path] = []
        current = self.root.parent
        while not os.path.isdir(current) and current != current.parent:
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, PARENT_MODE)
            except FileExistsError:
                if not os.path.isdir(folder):
                    raise self._inside_a_file() from None
            except NotADirectoryError:
                raise self._inside_a_file() from None
            except OSError as exc:
                raise self._uncreatable(exc) from exc
        try:
            os.mkdir(self.root, self.dir_mode)
        except FileExistsError:
            return
        except NotADirectoryError:
            raise self._inside_a_file() from None
        except OSError as exc:
            raise self._uncreatable(exc) from exc
        fd = self._open_root()  # the folder just made, unless it was swapped already
        if fd is not None:
            try:
                os.fchmod(fd, self.dir_mode)
            finally:
                os.close(fd)

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

    def _root_is_a_link(self) -> MeshUnusable:
        return MeshUnusable(
            f"mesh path {self.root} is a symlink (to {os.path.realpath(self.root)}); the mesh "
            "never follows links: pass the real directory with --mesh-dir or DRASILL_MESH_DIR",
            code="mesh-dir-symlink",
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
        self._check_folder(info, self.root)

    def _check_folder(self, info: os.stat_result, path: Path) -> None:
        """Refuse (exit 4) a folder of the mesh that is not ours or that others may write."""
        problem = folder_problem(info, group_shared=self.group_shared)
        if problem is not None:
            code, what, fix = problem
            kind = "mesh directory" if path == self.root else "mesh folder"
            raise MeshUnusable(
                f"{kind} {path} {what}; fix it with: {fix.format(path=path)}", code=code
            )

    def _check_meta(self) -> None:
        """The marker must be there and be ours, unless the folder is empty (a new mesh)."""
        meta = self._read_marker()
        if meta is None:
            try:
                entries = os.listdir(self.root)  # only when there is no marker: rare
            except OSError as exc:
                raise io_error("list the mesh directory", self.root, exc) from exc
            if META_FILE in entries:  # linked by a creating process between the two looks
                meta = self._read_marker()
        if meta is None:
            if not entries or self._only_being_created(entries):
                return
            raise MeshUnusable(
                f"{self.root} is not a mesh: it holds other files and no valid mesh marker "
                f"({META_FILE}); nothing in it was touched. Point --mesh-dir or "
                "DRASILL_MESH_DIR at a new or empty directory (mesh doctor explains more)",
                code="not-a-mesh",
            )
        version = meta["schema_version"]
        if version > SCHEMA_VERSION:
            raise MeshUnusable(
                f"mesh directory {self.root} has store format {version!r}, newer than this "
                f"mesh ({SCHEMA_VERSION}); upgrade drasill-cli",
                code="schema-too-new",
            )
        self._materialized = True

    def _only_being_created(self, entries: list[str]) -> bool:
        """A mesh another process is creating this instant: only the staging folder, holding
        nothing but the store's own temp files (the marker's, before it is linked in)."""
        if entries != [STAGING_DIR]:
            return False
        staging = os.path.join(self.root, STAGING_DIR)
        try:
            if not stat.S_ISDIR(os.lstat(staging).st_mode):
                return False
            return all(TEMP_NAME_RE.match(name) for name in os.listdir(staging))
        except OSError:
            return False

    def _read_marker(self) -> dict[str, Any] | None:
        """The mesh marker when it is a regular file holding a mesh's meta record."""
        try:
            meta = decode_record(self.read_bytes(META_FILE))
        except (UnusableRecord, FileNotFoundError):
            return None
        if (
            not isinstance(meta.get("schema_version"), int)
            or not isinstance(meta.get("created_at", ""), str)
            or meta.get("kind", MESH_KIND) != MESH_KIND
        ):
            return None
        return meta

    # ---- helpers -------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """The real path of `rel` (no `..` or absolute parts allowed), to show or watch; the
        store itself never opens a path: see `_open_dir`."""
        return Path(self._fspath(rel))

    def _fspath(self, rel: str) -> str:
        """`path` as a string, for messages."""
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"record name escapes the mesh: {rel!r}")
        return os.path.join(self.root, rel)

    # ---- folders: one name at a time, from the parent's descriptor ------------------------
    #
    # Every operation opens the folders of its paths anew: the mesh directory, then each name
    # below it with openat(O_NOFOLLOW | O_DIRECTORY) on its parent's descriptor, checking each
    # one's owner and mode on the descriptor just opened (fstat). Files are then opened,
    # linked, renamed and removed relative to the last descriptor. So no link is ever followed
    # at any depth, and no check outlives the descriptor it was made on: a folder swapped for a
    # link after one operation is met (and set aside) by the next, in the same process or not.
    # A level costs an openat, an fstat and a close: no path is looked up twice.

    def _open_root(self) -> int | None:
        """A descriptor of the mesh directory, checked; None when it does not exist."""
        refuse_inside("the directory mesh")
        try:
            fd = os.open(self._root_path, _DIR_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unopenable_root(exc) from None
        info = os.fstat(fd)
        if info.st_uid != self._euid or info.st_mode & self._unsafe_bits:
            try:
                self._check_folder(info, self.root)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _unopenable_root(self, exc: OSError) -> MeshError:
        if exc.errno not in _NOT_A_FOLDER:
            return io_error("open the mesh directory", self.root, exc)
        if os.path.islink(self.root):
            return self._root_is_a_link()
        if os.path.lexists(self.root):
            return MeshUnusable(
                f"mesh path {self.root} is not a directory; remove it or choose another --mesh-dir",
                code="mesh-dir-not-directory",
            )
        return self._inside_a_file()

    def _made_root(self) -> int:
        """`_open_root` for a write: the mesh is made first if it is new."""
        refuse_inside("the directory mesh")
        self._writable()
        self._materialize()
        root = self._open_root()
        if root is None:
            raise MeshUnusable(
                f"mesh directory {self.root} was removed while in use; run the command again",
                code="mesh-dir-missing",
            )
        return root

    def _open_dir(self, rel_dir: str, *, create: bool = False, durable: bool = False) -> int | None:
        """A descriptor of the mesh folder `rel_dir` ("" the mesh directory), each folder on
        the way opened from its parent's descriptor without following a link and checked (owner,
        mode: `MeshUnusable` when others may write it). None when it or a folder above it does
        not exist, unless `create`: then each missing folder is made with the mesh's mode (with
        `durable`, each new one is flushed into its parent). A symlink or anything but a folder
        on the way is quarantined (reported only, by a read-only view) and counts as absent.
        Refused inside an exclusion's decision (`storage.exclusion`): every read and write of
        the mesh starts here or at `_made_root`."""
        refuse_inside("the directory mesh")
        if self._held:
            held = self._held_copy(rel_dir)
            if held is not None:
                return held
        parts = _parts(rel_dir)
        root = self._made_root() if create else self._open_root()
        if root is None or not parts:
            return root
        try:
            return self._walk(root, parts, create=create, durable=durable)
        finally:
            os.close(root)

    def _held_copy(self, rel_dir: str) -> int | None:
        """A copy of the descriptor of `rel_dir` when a scan of this thread, still under way,
        holds it open (and checked it when it opened it): reading or taking the records it
        yields then walks no folder again. Nothing outlives the scan: its folder leaves
        `_held` before it is closed."""
        held = self._held.get(rel_dir)
        if held is None or held[1] != threading.get_ident():
            return None
        return os.dup(held[0])

    def _made_dir(self, rel_dir: str, *, durable: bool = False) -> int:
        """`_open_dir` creating what is missing: always a descriptor."""
        root = self._made_root()
        parts = _parts(rel_dir)
        if not parts:
            return root
        try:
            return self._walk_made(root, parts, durable=durable)
        finally:
            os.close(root)

    def _walk_made(
        self, start: int, parts: list[str], *, skip: int = 0, durable: bool = False
    ) -> int:
        fd = self._walk(start, parts, skip=skip, create=True, durable=durable)
        if fd is None:  # pragma: no cover -- `create` never gives None
            raise _not_a_folder(self.path("/".join(parts)))
        return fd

    def _walk(
        self, start: int, parts: list[str], *, skip: int = 0, create: bool, durable: bool
    ) -> int | None:
        """The mesh folder `parts` as a new descriptor, walked down from the open folder
        `start` (left open), which is the mesh directory or, with `skip`, the folder of the
        first `skip` parts; walked again from `start` when a folder on the way is removed
        meanwhile (a consumer removes the empty shards it passes)."""
        for _ in range(_LINK_RETRIES):
            try:
                return self._descend(start, parts, skip, create=create, durable=durable)
            except _Vanished:
                continue
        raise self._keeps_vanishing("/".join(parts))

    def _descend(
        self, start: int, parts: list[str], skip: int, *, create: bool, durable: bool
    ) -> int | None:
        current = start
        try:
            for index in range(skip, len(parts)):
                try:
                    child = os.open(parts[index], _DIR_FLAGS, dir_fd=current)
                except OSError as exc:
                    found = self._open_slowly(current, parts, index, exc, create, durable)
                    if found is None:
                        return None
                    child = found
                else:
                    info = os.fstat(child)
                    if info.st_uid != self._euid or info.st_mode & self._unsafe_bits:
                        self._check_open_folder(child, info, parts[: index + 1])
                if current != start:
                    os.close(current)
                current = child
            if current == start:
                return os.dup(start)
            found, current = current, start
            return found
        finally:
            if current != start:
                os.close(current)

    def _check_open_folder(self, fd: int, info: os.stat_result, parts: list[str]) -> None:
        """`_check_folder` of a folder just opened, closed when it is refused."""
        try:
            self._check_folder(info, self.root.joinpath(*parts))
        except BaseException:
            os.close(fd)
            raise

    def _open_slowly(
        self,
        parent: int,
        parts: list[str],
        index: int,
        exc: OSError,
        create: bool,
        durable: bool,
    ) -> int | None:
        """The folder `parts[index]` in `parent`, whose first open failed with `exc`: made when
        missing (with `create`), or what stands there set aside; None: absent."""
        name, rel = parts[index], "/".join(parts[: index + 1])
        made = False
        for _ in range(_LINK_RETRIES):
            if exc.errno == errno.ENOENT:
                if not create:
                    return None
                made = self._mkdir_at(parent, name, rel) or made
            elif exc.errno in _NOT_A_FOLDER:
                self._set_aside(parent, name, rel)
                if not create:
                    return None
            else:
                raise io_error("open the folder", self._fspath(rel), exc) from exc
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as again:
                exc = again
                continue
            try:
                info = os.fstat(fd)
                mode = stat.S_IMODE(info.st_mode)
                if made and info.st_uid == self._euid and mode != self.dir_mode:
                    os.fchmod(fd, self.dir_mode)  # whatever the umask took away
                    info = os.fstat(fd)
                self._check_folder(info, self.root / rel)
                if made and durable:
                    self._fsync(parent)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise self._keeps_vanishing(rel)

    def _mkdir_at(self, parent: int, name: str, rel: str) -> bool:
        """mkdirat(2); False when something stands there already (looked at again)."""
        try:
            os.mkdir(name, self.dir_mode, dir_fd=parent)
        except FileExistsError:
            return False
        except FileNotFoundError:  # the parent itself was removed meanwhile
            raise _Vanished from None
        except OSError as exc:
            raise io_error("create the folder", self._fspath(rel), exc) from exc
        return True

    def _set_aside(self, parent: int, name: str, rel: str) -> None:
        """Quarantine what stands where a folder of the mesh should be (never following it)."""
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return  # gone meanwhile
        except OSError as exc:
            raise io_error("look at", self._fspath(rel), exc) from exc
        if rel == QUARANTINE_DIR:
            raise _not_a_folder(self.root / rel)
        self.quarantine(rel, f"is a {_kind(mode)} where a folder of the mesh should be")

    def _keeps_vanishing(self, rel: str) -> MeshUnusable:
        return MeshUnusable(
            f"{self._fspath(rel)} keeps disappearing or being replaced by something that is not "
            "a folder; find what changes it and stop it, then run `mesh doctor`",
            code="unsafe-entry",
        )

    @contextlib.contextmanager
    def _looking_in(self, rel_dir: str) -> Iterator[int | None]:
        """`_open_dir` for the block (None: the folder does not exist)."""
        fd = self._open_dir(rel_dir)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    @contextlib.contextmanager
    def _writing_in(self, rel_dir: str) -> Iterator[int]:
        """`_made_dir` for the block."""
        fd = self._made_dir(rel_dir)
        try:
            yield fd
        finally:
            os.close(fd)

    def ensure_dir(self, rel_dir: str) -> Path:
        """Create `rel_dir` (and parents) with the mesh's mode; refuse symlinked folders. The
        path returned is for watching (a hint) and showing, never for opening."""
        os.close(self._made_dir(rel_dir))
        return self.path(rel_dir)

    def _fsync(self, fd: int) -> None:
        """Flush a file's data, or a folder's renames and links (no-op with `fsync=False`)."""
        if self.fsync:
            os.fsync(fd)

    def _write_temp(self, staging: int, name: str, data: bytes, mode: int | None = None) -> str:
        """A flushed temp file holding `data`, in the staging folder (see `sweep_temp`), with
        `mode` (default: the mesh's file mode) from its creation on: its name there."""
        mode = self.file_mode if mode is None else mode
        tmp = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{name}"
        try:
            atomicfile.write_new(staging, tmp, data, mode, fsync=self.fsync)
        except OSError as exc:
            raise io_error("write", self.root / STAGING_DIR / name, exc) from exc
        return tmp

    def _place(self, rel: str, data: bytes, *, exclusive: bool, mode: int | None = None) -> bool:
        parent, name = _split(rel)
        root = self._made_root()
        fds = [root]
        try:
            staging = self._walk_made(root, [STAGING_DIR])
            fds.append(staging)
            folder = self._walk_made(root, _parts(parent)) if parent else root
            fds.append(folder)
            tmp = self._write_temp(staging, name, data, mode)
            try:
                if exclusive:
                    try:
                        os.link(
                            tmp, name, src_dir_fd=staging, dst_dir_fd=folder, follow_symlinks=False
                        )
                    except FileExistsError:
                        return False
                else:
                    os.rename(tmp, name, src_dir_fd=staging, dst_dir_fd=folder)
                    tmp = ""
            except OSError as exc:
                raise io_error("write", self._fspath(rel), exc) from exc
            finally:
                if tmp:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=staging)
            self._fsync(folder)
        finally:
            _close_all(fds)
        return True

    # ---- Store interface -----------------------------------------------------------------

    def read(self, rel: str) -> dict[str, Any] | None:
        """The record at `rel`; anything that is not a usable record is quarantined (None).

        Never follows a symlink and never blocks: a FIFO, socket, device or folder in a
        record's place, a file over the record size bound, bytes that are not JSON (NaN and
        Infinity included) or nest too deep, and JSON that is not an object are all moved to
        `quarantine/` unread.
        """
        try:
            return decode_record(self.read_bytes(rel))
        except FileNotFoundError:
            return None
        except UnusableRecord as exc:
            self.quarantine(rel, exc.reason)
            return None

    def read_checked_writer(
        self, rel: str, check: Callable[[dict[str, Any]], T]
    ) -> tuple[T, int | None] | None:
        """`read_checked`, with the uid proven to have written the record: the owner of the
        file read (fstat of the very descriptor), when only that user can have written it
        (no group or other write bit, no second link); None when that is not proven."""
        try:
            raw, info = self._read_with_stat(rel)
            record = decode_record(raw)
        except FileNotFoundError:
            return None
        except UnusableRecord as exc:
            self.quarantine(rel, exc.reason)
            return None
        try:
            checked = check(record)
        except RecordError as exc:
            self.quarantine(rel, exc.reason)
            return None
        sealed = info.st_nlink == 1 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        return checked, info.st_uid if sealed else None

    def read_checked(self, rel: str, check: Callable[[dict[str, Any]], T]) -> T | None:
        """The record at `rel` as `check` returns it, or None when it is missing or unusable.

        The one read-validate-quarantine step: a record that `check` refuses (it raises
        `models.RecordError`, whose reason is the quarantine report) is moved aside, never used.
        """
        raw = self.read(rel)
        if raw is None:
            return None
        try:
            return check(raw)
        except RecordError as exc:
            self.quarantine(rel, exc.reason)
            return None

    def _open_file(self, folder: int, name: str, flags: int) -> int:
        """A descriptor of the regular file `name` in the folder `folder`, opened without
        following a link or blocking (a FIFO, socket or device never hangs or is used);
        `UnusableRecord` says what stands there instead. FileNotFoundError when it is absent;
        other OSErrors pass on."""
        flags |= _FILE_FLAGS
        try:
            fd = os.open(name, flags, self.file_mode, dir_fd=folder)
        except NotADirectoryError:
            raise FileNotFoundError(name) from None
        except PermissionError as denied:
            # An entry that may not be opened (a file of mode 000, another member's FIFO in a
            # group-shared mesh) is damage like any other, never a block; a folder that cannot
            # be searched or written (nothing stands there to look at) is the store's problem.
            try:
                mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
            except OSError:
                raise denied from None
            if stat.S_ISREG(mode):
                raise UnusableRecord("cannot be read: permission denied (check its mode)") from None
            raise UnusableRecord(f"is a {_kind(mode)}, not a file") from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            try:
                mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            raise UnusableRecord(f"is a {_kind(mode)}, not a file") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UnusableRecord(f"is a {_kind(mode)}, not a file")
        return fd

    def _open_own(self, rel: str, flags: int, action: str) -> int:
        """`_open_file` for a file the mesh writes (a sidecar, the audit log), its folders made
        as needed: whatever stands in its place is quarantined and the open tried again."""
        parent, name = _split(rel)
        for _ in range(3):
            folder = self._made_dir(parent)
            try:
                fd = self._open_file(folder, name, flags | os.O_CREAT)
                self._exact_mode(fd)
                return fd
            except UnusableRecord as exc:
                reason = exc.reason
            except OSError as exc:
                raise io_error(action, self._fspath(rel), exc) from exc
            finally:
                os.close(folder)
            self.quarantine(rel, reason)
        raise MeshUnusable(
            f"{self._fspath(rel)} keeps being replaced by something that is not a file; find "
            "what writes there and stop it, then run `mesh doctor`",
            code="unsafe-entry",
        )

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of the regular file `rel` (at most the record bound), opened without
        following links or blocking; `UnusableRecord` says why anything else was refused."""
        return self._read_with_stat(rel)[0]

    def _read_with_stat(self, rel: str) -> tuple[bytes, os.stat_result]:
        """`read_bytes`, with the fstat of the descriptor the bytes were read from."""
        parent, name = _split(rel)
        folder = self._open_dir(parent)
        if folder is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)
        try:
            fd = self._open_file(folder, name, os.O_RDONLY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise io_error("read", self._fspath(rel), exc) from exc
        finally:
            os.close(folder)
        try:
            info = os.fstat(fd)
            if info.st_size > self.max_record_bytes:
                raise UnusableRecord(
                    f"is {info.st_size} bytes, over the record bound of {self.max_record_bytes}"
                )
            chunks = []
            total = 0
            while chunk := os.read(fd, self.max_record_bytes + 1 - total):
                chunks.append(chunk)
                total += len(chunk)
                if total > self.max_record_bytes:
                    raise UnusableRecord(
                        f"is over the record bound of {self.max_record_bytes} bytes"
                    )
            return b"".join(chunks), info
        except OSError as exc:
            raise io_error("read", self._fspath(rel), exc) from exc
        finally:
            os.close(fd)

    def write(self, rel: str, record: dict[str, Any], *, sealed: bool = False) -> None:
        """Replace the record atomically. `sealed`: only its writer may write into the file
        (no group write bit, even in a group-shared mesh; others still read and replace it),
        so its owner proves who wrote it (`read_checked_writer`)."""
        mode = self.file_mode & ~(stat.S_IWGRP | stat.S_IWOTH) if sealed else None
        self._place(rel, encode_record(record), exclusive=False, mode=mode)

    def create(self, rel: str, record: dict[str, Any]) -> bool:
        """Create the record only if absent: one atomic link(2), so exactly one creator wins."""
        return self._place(rel, encode_record(record), exclusive=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Store raw bytes atomically."""
        self._place(rel, data, exclusive=False)

    def remove(self, rel: str) -> bool:
        """Delete the file; False if it was already gone (or its folder is not a real one:
        nothing is ever removed through a link)."""
        self._writable()
        parent, name = _split(rel)
        with self._looking_in(parent) as folder:
            if folder is None:
                return False
            try:
                os.unlink(name, dir_fd=folder)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise io_error("remove", self._fspath(rel), exc) from exc
        return True

    def move(self, src: str, dst: str) -> bool:
        """Atomic rename, then both folders flushed; False when `src` is gone, e.g. taken by a
        concurrent consumer (rename(2) succeeds for exactly one of them)."""
        self._writable()
        (src_dir, src_name), (dst_dir, dst_name) = _split(src), _split(dst)
        src_parts, dst_parts = _parts(src_dir), _parts(dst_dir)
        shared = 0  # the folders both paths pass through are opened once
        while shared < min(len(src_parts), len(dst_parts)) and (
            src_parts[shared] == dst_parts[shared]
        ):
            shared += 1
        if self._held and src_dir != dst_dir:
            source = self._held_copy(src_dir)
            if source is not None:  # a scan of this thread holds it: walk to the target only
                return self._rename_between(source, src_name, dst_dir, dst)
        root = self._open_root()
        if root is None:
            return False
        fds = [root]
        try:
            common = (
                self._walk(root, src_parts[:shared], create=False, durable=False)
                if shared
                else root
            )
            if common is None:
                return False
            fds.append(common)
            source = self._walk(common, src_parts, skip=shared, create=False, durable=False)
            if source is None:
                return False
            fds.append(source)
            target = (
                source if src_dir == dst_dir else self._walk_made(common, dst_parts, skip=shared)
            )
            fds.append(target)
            try:
                os.rename(src_name, dst_name, src_dir_fd=source, dst_dir_fd=target)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise io_error("move", self._fspath(dst), exc) from exc
            self._fsync(target)
            if src_dir != dst_dir:
                self._fsync(source)
        finally:
            _close_all(fds)
        return True

    def _rename_between(self, source: int, src_name: str, dst_dir: str, dst: str) -> bool:
        """`move` from an open folder `source` (closed here) into `dst_dir`."""
        fds = [source]
        try:
            target = self._made_dir(dst_dir)
            fds.append(target)
            try:
                os.rename(src_name, _split(dst)[1], src_dir_fd=source, dst_dir_fd=target)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise io_error("move", self._fspath(dst), exc) from exc
            self._fsync(target)
            self._fsync(source)
        finally:
            _close_all(fds)
        return True

    def publish(self, data: bytes, links: Sequence[str], keep_as: str) -> None:
        """One flushed temp file, hard-linked to each of `links`, then renamed to `keep_as`.

        Only the folders of `links` are flushed: the renamed temp is the writer's own copy,
        and if a power loss forgets the rename, the file is left under its temp name (a link of
        the same, already flushed, data) for `prune` to clear.
        """
        self._writable()
        if not links:
            raise ValueError("publish needs at least one link")
        keep_dir, keep_name = _split(keep_as)
        root = self._made_root()
        fds = [root]
        flushed: dict[str, int] = {}
        try:
            staging = self._walk_made(root, [STAGING_DIR])
            fds.append(staging)
            tmp = self._write_temp(staging, _split(links[0])[1], data)
            try:
                for rel in links:
                    folder = self._link_into(root, staging, tmp, rel)
                    fds.append(folder)
                    flushed.setdefault(_split(rel)[0], folder)
                keep = self._walk_made(root, _parts(keep_dir))
                fds.append(keep)
                os.rename(tmp, keep_name, src_dir_fd=staging, dst_dir_fd=keep)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=staging)
                if isinstance(exc, OSError):
                    raise io_error("write", self._fspath(keep_as), exc) from exc
                raise
            for folder in flushed.values():
                self._fsync(folder)  # one a consumer removed meanwhile was taken all, flushed
        finally:
            _close_all(fds)

    def _link_into(self, root: int, staging: int, tmp: str, rel: str) -> int:
        """Hard-link the temp `tmp` as `rel`, recreating its folder while a concurrent
        `remove_dir` keeps taking it away (consumers remove the empty shards they pass); the
        folder's descriptor is returned, to be flushed."""
        parent, name = _split(rel)
        for _ in range(_LINK_RETRIES):
            folder = self._walk_made(root, _parts(parent), durable=True)
            try:
                os.link(tmp, name, src_dir_fd=staging, dst_dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                os.close(folder)
                os.stat(tmp, dir_fd=staging, follow_symlinks=False)  # the temp itself is there
                continue  # its folder was removed after it was opened
            except OSError as exc:
                os.close(folder)
                raise io_error("write", self._fspath(rel), exc) from exc
            return folder
        raise MeshUnusable(
            f"could not write into {self._fspath(parent)}: the folder kept disappearing; "
            "check the mesh directory with `mesh doctor`",
            code="store-write-failed",
        )

    def link(self, src: str, dst: str) -> None:
        """A hard link `dst` to the file `src`, its folder flushed."""
        self._writable()
        (src_dir, src_name), (dst_dir, dst_name) = _split(src), _split(dst)
        with self._looking_in(src_dir) as source, self._writing_in(dst_dir) as target:
            try:
                if source is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), src)
                os.link(
                    src_name, dst_name, src_dir_fd=source, dst_dir_fd=target, follow_symlinks=False
                )
            except OSError as exc:
                raise io_error("write", self._fspath(dst), exc) from exc
            self._fsync(target)

    def scan(
        self, rel_dir: str, suffix: str = ".json", *, depth: int = 0, remove_empty: bool = False
    ) -> Generator[str, None, None]:
        """Names under `rel_dir` ending in `suffix` (regular files only), in path order,
        lazily: a consumer that stops early lists only the first few folders. A symlink or
        other special entry met on the way is never followed: it is quarantined."""
        if remove_empty:
            self._writable()
        folder = self._open_dir(rel_dir)
        if folder is None:
            return
        try:
            yield from self._scan(folder, rel_dir, suffix, depth, remove_empty)
        finally:
            os.close(folder)

    def _scan(
        self, folder: int, rel_dir: str, suffix: str, depth: int, remove_empty: bool
    ) -> Iterator[str]:
        held = (folder, threading.get_ident())
        self._held[rel_dir] = held
        try:
            yield from self._scan_held(folder, rel_dir, suffix, depth, remove_empty)
        finally:
            if self._held.get(rel_dir) == held:  # removed before the folder is closed
                del self._held[rel_dir]

    def _scan_held(
        self, folder: int, rel_dir: str, suffix: str, depth: int, remove_empty: bool
    ) -> Iterator[str]:
        for entry in self._entries(folder, rel_dir):
            rel = f"{rel_dir}/{entry.name}"
            if entry.is_symlink():
                self.quarantine(rel, "is a symlink")
            elif entry.name.endswith(suffix):
                if entry.is_file(follow_symlinks=False):
                    yield rel
                else:
                    self._quarantine_entry(rel, entry)
            elif depth > 0 and entry.is_dir(follow_symlinks=False):
                parts = rel.split("/")
                child = self._walk(folder, parts, skip=len(parts) - 1, create=False, durable=False)
                if child is None:
                    continue
                try:
                    yield from self._scan(child, rel, suffix, depth - 1, remove_empty)
                finally:
                    os.close(child)
                if remove_empty:  # every entry was passed over: usually empty now
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.name, dir_fd=folder)

    def _entries(self, folder: int, rel_dir: str, *, temps: bool = False) -> list[os.DirEntry[str]]:
        """The entries of an open folder, sorted by name; the store's temp files only with
        `temps`. Their `stat` needs the folder's descriptor still open."""
        try:
            with os.scandir(folder) as listing:
                found = [e for e in listing if temps or not e.name.startswith(TMP_PREFIX)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise io_error("list", self._fspath(rel_dir), exc) from exc
        found.sort(key=lambda entry: entry.name)
        return found

    def _quarantine_entry(self, rel: str, entry: os.DirEntry[str]) -> None:
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            return
        self.quarantine(rel, f"is a {_kind(mode)}, not a file")

    def names(self, rel_dir: str, suffix: str = ".json", *, temps: bool = False) -> list[str]:
        """Sorted names of records in `rel_dir` (no sidecar locks; no temp files unless
        `temps`: a folder the store never stages in, like an attachment folder, may hold a
        file whose own name starts as a temp file's does)."""
        with self._looking_in(rel_dir) as folder:
            if folder is None:
                return []
            try:
                entries = os.listdir(folder)
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise io_error("list", self._fspath(rel_dir), exc) from exc
        found = [
            e for e in entries if e.endswith(suffix) and (temps or not e.startswith(TMP_PREFIX))
        ]
        found.sort()
        return found

    def subdirs(self, rel_dir: str) -> list[str]:
        """Sorted names of the real folders in `rel_dir` (a symlink is never one: it and any
        file where only folders belong are quarantined)."""
        found = []
        with self._looking_in(rel_dir) as folder:
            if folder is None:
                return []
            for entry in self._entries(folder, rel_dir):
                if entry.is_dir(follow_symlinks=False):
                    found.append(entry.name)
                elif entry.is_symlink():
                    self.quarantine(f"{rel_dir}/{entry.name}", "is a symlink")
                else:
                    self._quarantine_entry(f"{rel_dir}/{entry.name}", entry)
        return found

    def sweep_temp(self, older_than: float, *, remove: bool = True) -> list[str]:
        """Temp files of killed writers, last changed before `older_than`; removed unless
        `remove` is False. Only the staging folder is looked at, and only regular files named
        as the store names its temp files: nothing else in the mesh is ever swept."""
        if remove:
            self._writable()
        stale = []
        with self._looking_in(STAGING_DIR) as staging:
            if staging is None:
                return []
            for entry in self._entries(staging, STAGING_DIR, temps=True):
                if not TEMP_NAME_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                        continue
                    if remove:
                        os.unlink(entry.name, dir_fd=staging)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise io_error("remove", self._fspath(STAGING_DIR), exc) from exc
                stale.append(f"{STAGING_DIR}/{entry.name}")
        return stale

    def remove_dir(self, rel_dir: str) -> bool:
        """rmdir(2): False when the folder is absent or not empty (nothing is deleted)."""
        self._writable()
        parent, name = _split(rel_dir)
        with self._looking_in(parent) as folder:
            if folder is None:
                return False
            try:
                os.rmdir(name, dir_fd=folder)
            except OSError:
                return False
        return True

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = -1) -> Iterator[None]:
        """An exclusive flock(2) on the sidecar `.locks/<name>.lock`, held for the block.

        The sidecar is never deleted, so exclusion never breaks; the lock dies with its
        process, so a killed holder never blocks anyone. The sidecar is opened without
        following a link or blocking; anything but a regular file in its place (a symlink, a
        folder, a FIFO) is quarantined first, so it can neither be used nor block the name for
        good. `timeout` < 0 waits as long as it takes; otherwise `Busy` once it has passed.
        """
        self._writable()
        fd = self._open_own(f"{LOCK_DIR}/{name}.lock", os.O_RDWR, "lock")
        try:
            _flock(fd, timeout, name)
            yield
        finally:
            os.close(fd)  # releases the flock

    def touch(self, rel: str, when: float | None = None) -> None:
        """Set the modification time to now (or to `when`), creating the file if needed."""
        self._writable()
        parent, name = _split(rel)
        times = None if when is None else (when, when)
        with self._writing_in(parent) as folder:
            try:
                os.utime(name, times, dir_fd=folder, follow_symlinks=False)
                return
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise io_error("write", self._fspath(rel), exc) from exc
        fd = self._open_own(rel, os.O_WRONLY, "write")
        try:
            if times is not None:
                os.utime(fd, times)
        except OSError as exc:
            raise io_error("write", self._fspath(rel), exc) from exc
        finally:
            os.close(fd)

    def _exact_mode(self, fd: int, mode: int | None = None) -> None:
        """Give a file we created the mesh's mode (or `mode`), whatever the umask took away."""
        mode = self.file_mode if mode is None else mode
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.geteuid():
            os.fchmod(fd, mode)

    def append(self, rel: str, data: bytes) -> int:
        """One write(2) on an O_APPEND descriptor: lines from many processes never interleave."""
        self._writable()
        fd = self._open_own(rel, os.O_WRONLY | os.O_APPEND, "write")
        try:
            os.write(fd, data)
            return os.fstat(fd).st_size
        except OSError as exc:
            raise io_error("write", self._fspath(rel), exc) from exc
        finally:
            os.close(fd)

    def open_regular(self, rel: str) -> BinaryIO | None:
        """The regular file `rel` opened for reading (a log), or None when it is absent; a
        symlink or special file in its place is quarantined, never opened through."""
        parent, name = _split(rel)
        with self._looking_in(parent) as folder:
            if folder is None:
                return None
            try:
                fd = self._open_file(folder, name, os.O_RDONLY)
            except FileNotFoundError:
                return None
            except UnusableRecord as exc:
                self.quarantine(rel, exc.reason)
                return None
            except OSError as exc:
                raise io_error("read", self._fspath(rel), exc) from exc
        return os.fdopen(fd, "rb")

    def open_file(self, rel: str) -> BinaryIO:
        """The regular file `rel` opened for reading in chunks (an attachment of any size),
        without following a link or blocking, and without moving anything aside:
        `UnusableRecord` says what stands there instead, FileNotFoundError that nothing does."""
        parent, name = _split(rel)
        with self._looking_in(parent) as folder:
            if folder is None:
                raise FileNotFoundError(self._fspath(rel))
            try:
                fd = self._open_file(folder, name, os.O_RDONLY)
            except (FileNotFoundError, UnusableRecord):
                raise
            except OSError as exc:
                raise io_error("read", self._fspath(rel), exc) from exc
        return os.fdopen(fd, "rb")

    def stat(self, rel: str) -> os.stat_result | None:
        """lstat(2) of `rel` (a link is not followed, nor any folder on the way), or None
        when it is absent."""
        parent, name = _split(rel)
        with self._looking_in(parent) as folder:
            if folder is None:
                return None
            try:
                return os.stat(name, dir_fd=folder, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise io_error("look at", self._fspath(rel), exc) from exc

    def mtime(self, rel: str) -> float | None:
        """Modification time, or None (also for a folder replaced by a symlink, which is
        quarantined: the path is never looked up through a link)."""
        info = self.stat(rel)
        return None if info is None else info.st_mtime

    def changed_ns(self, rel: str) -> int | None:
        """Status change time (ctime, ns; a rename sets it), or None; `mtime`'s rules."""
        info = self.stat(rel)
        return None if info is None else info.st_ctime_ns

    # ---- damage handling -----------------------------------------------------------------

    def quarantine(self, rel: str, reason: str) -> None:
        """Move a damaged file aside, keep it, and report it in `warnings`.

        Its name in `quarantine/` is the time, the pid and its path with `/` as `__`, cut to
        fit a file name (see `quarantine_name`). A move that fails anyway (the folder it is in
        cannot be written, say) leaves the file where it is, skipped and reported: damage never
        blocks the rest of the mesh.
        """
        if self.read_only:
            self.warnings.append(f"damaged file {rel} ({reason}); left in place by a read-only run")
            return
        self.ensure_dir(QUARANTINE_DIR)
        dest = f"{QUARANTINE_DIR}/{quarantine_name(rel, clock.iso(), os.getpid())}"
        try:
            moved = self.move(rel, dest)
        except MeshUnusable as exc:  # StoreFull included: the file stays, unread and unused
            self.warnings.append(
                f"damaged file {rel} ({reason}) could not be moved to {self.root / QUARANTINE_DIR}"
                f" ({exc}); it was left in place and skipped"
            )
            return
        if moved:
            self.warnings.append(f"quarantined {rel} ({reason}); it was moved to {self.path(dest)}")


class _Vanished(Exception):
    """A folder being walked was removed meanwhile (a consumer removes the empty shards it
    passes): the walk starts again from the mesh directory."""


def _close_all(fds: list[int]) -> None:
    """Close each descriptor of `fds` once (one may be listed twice: the same folder)."""
    for fd in dict.fromkeys(fds):
        os.close(fd)


def _parts(rel_dir: str) -> list[str]:
    """The folder names of `rel_dir` ("" is the mesh directory itself: none)."""
    if not rel_dir:
        return []
    parts = rel_dir.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"record name escapes the mesh: {rel_dir!r}")
    return parts


def _split(rel: str) -> tuple[str, str]:
    """`rel` as its folder and its last name (never empty, `.` or `..`)."""
    parent, _, name = rel.rpartition("/")
    if name in ("", ".", ".."):
        raise ValueError(f"not a record name: {rel!r}")
    return parent, name


def folder_problem(info: os.stat_result, *, group_shared: bool) -> tuple[str, str, str] | None:
    """Why a folder of the mesh must not be used, as (error code, what is wrong with it, the
    fix as a command with `{path}` to fill in), or None: it must be ours (or, in a group-shared
    mesh, setgid to one of our groups), never writable by every user, and group-writable only
    in a group-shared mesh."""
    me = os.geteuid()
    if info.st_uid != me and not _shared_with_me(info, group_shared=group_shared):
        if info.st_mode & stat.S_ISGID:  # a group-shared mesh: join it, never take it over
            return _outsider(info, group_shared=group_shared)
        return (
            "unsafe-owner",
            f"is owned by uid {info.st_uid}, not by you (uid {me})",
            f"chown {me} {{path}} (as its owner), or use a mesh directory of your own (--mesh-dir)",
        )
    if info.st_mode & stat.S_IWOTH:
        return (
            "unsafe-permissions",
            "is writable by every user, who could plant or forge records there",
            "chmod o-rwx {path}",
        )
    if info.st_mode & stat.S_IWGRP and not group_shared:
        return (
            "unsafe-permissions",
            "is group-writable but group_shared is off",
            "chmod g-w {path}, or set group_shared = true in the config",
        )
    return None


def _outsider(info: os.stat_result, *, group_shared: bool) -> tuple[str, str, str]:
    """The problem of a group-shared (setgid) folder of another user that is not ours: set
    group_shared when its group is one of ours, else ask to join the group."""
    import grp
    import pwd

    gid = info.st_gid
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    mine = gid == os.getegid() or gid in os.getgroups()
    if mine and not group_shared:
        return (
            "unsafe-owner",
            f"is a group-shared mesh of uid {info.st_uid} (group {group}, gid {gid})",
            "set group_shared = true in your config to use it",
        )
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    return (
        "unsafe-owner",
        f"is a group-shared mesh of uid {info.st_uid} for group {group} (gid {gid}), "
        "which you are not in",
        (
            f"ask an administrator to add you to the group (usermod -aG {group} {me}), log in "
            "again, and set group_shared = true in your config; or use a mesh directory of "
            "your own (--mesh-dir)"
        )
        .replace("{", "{{")
        .replace("}", "}}"),  # a template: `{path}` is filled in later
    )


def _shared_with_me(info: os.stat_result, *, group_shared: bool) -> bool:
    """A group-shared folder of another user is ours too when it is setgid to our group (root
    uses every group's folders: its access does not depend on membership)."""
    if not group_shared or not info.st_mode & stat.S_ISGID:
        return False
    return os.geteuid() == 0 or info.st_gid == os.getegid() or info.st_gid in os.getgroups()


# A quarantined file's name stays under this many bytes (NAME_MAX is 255 on Linux file systems).
QUARANTINE_NAME_BYTES = 240


def quarantine_name(rel: str, stamp: str, pid: int) -> str:
    """`<time>-<pid>-<path with / as __>`, at most `QUARANTINE_NAME_BYTES` bytes.

    A longer one keeps the end of the path (the file's own name, which carries a message's or
    task's id) after a digest of the whole path, so two long names never meet.
    """
    import hashlib

    head = f"{stamp.replace(':', '')}-{pid}-"
    flat = os.fsencode(rel.replace("/", "__"))
    room = QUARANTINE_NAME_BYTES - len(head.encode())
    if len(flat) <= room:
        return head + os.fsdecode(flat)
    digest = hashlib.sha256(flat).hexdigest()[:16]
    tail = flat[-(room - len(digest) - 3) :]
    return f"{head}{digest}..{os.fsdecode(tail).lstrip('_')}"


def encode_record(record: dict[str, Any]) -> bytes:
    """A record as stored: compact UTF-8 JSON (also each audit line, before its newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class UnusableRecord(Exception):
    """A record's place holds something that must not be read; `reason` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _flock(fd: int, timeout: float, name: str) -> None:
    """Take an exclusive flock on `fd`, polling every 5 ms up to `timeout` seconds."""
    import fcntl

    if timeout < 0:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Busy(
                    f"{name} is held by another mesh process; try again", code="busy"
                ) from None
            time.sleep(_LOCK_POLL_S)


def decode_record(raw: bytes) -> dict[str, Any]:
    """A stored record's bytes as a JSON object; `UnusableRecord` says why they are not one."""
    try:
        record = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise UnusableRecord("does not parse as JSON") from None
    except RecursionError:
        raise UnusableRecord("nests too deep") from None
    if not isinstance(record, dict):
        raise UnusableRecord("is not a JSON object")
    return record


def _no_constant(name: str) -> Any:
    """`json.loads` hook: NaN and Infinity are not JSON and could not be written back."""
    raise ValueError(f"{name} is not JSON")


def _kind(mode: int) -> str:
    """What a file-system entry is, in words."""
    kinds = (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISBLK, "device"),
    )
    return next((word for test, word in kinds if test(mode)), "special file")


def _not_a_folder(path: Path) -> MeshUnusable:
    return MeshUnusable(
        f"{path} should be a directory of the mesh but is a symlink or a file; move it away "
        "and run the command again",
        code="unsafe-entry",
    )
