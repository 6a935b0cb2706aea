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
- files are opened with O_NOFOLLOW, so a planted symlink is never followed;
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from drasill_cli import SCHEMA_VERSION, clock

# Re-exported: the directory backend's modules take the store's errors from the store.
from drasill_cli.errors import Busy as Busy  # noqa: PLC0414 (explicit re-export)
from drasill_cli.errors import MeshUnusable
from drasill_cli.errors import StoreFull as StoreFull  # noqa: PLC0414 (explicit re-export)
from drasill_cli.errors import io_error as io_error  # noqa: PLC0414 (explicit re-export)
from drasill_cli.models import RecordError

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
        self._known_dirs: dict[str, Path] = {}
        self._materialized = False
        self._verified_dirs: set[str] = set()
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
            raise MeshUnusable(
                f"mesh path {root} is a symlink (to {os.path.realpath(root)}); the mesh never "
                "follows links: pass the real directory with --mesh-dir or DRASILL_MESH_DIR",
                code="mesh-dir-symlink",
            )
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
        """The real path of `rel` (no `..` or absolute parts allowed)."""
        return Path(self._fspath(rel))

    def _fspath(self, rel: str) -> str:
        """`path` as a string, cheaper on the hot paths (send, consume)."""
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"record name escapes the mesh: {rel!r}")
        return os.path.join(self.root, rel)

    def _folder_usable(self, rel_dir: str) -> bool:
        """Whether `rel_dir` can be looked into: each of its parts is a real folder or absent.

        A symlink (or a file, FIFO, socket) where a folder of the mesh should be is never
        followed: it is quarantined (reported only, in a read-only run) and the folder counts
        as absent, so the next write makes a real one.
        """
        if not rel_dir or rel_dir in self._verified_dirs:
            return True
        current = str(self.root)
        done: list[str] = []
        for part in rel_dir.split("/"):
            current = os.path.join(current, part)
            done.append(part)
            try:
                info = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return True
            except OSError as exc:
                raise io_error("look into", current, exc) from exc
            if not stat.S_ISDIR(info.st_mode):
                self._quarantine_folder("/".join(done), info.st_mode)
                return False
        self._verified_dirs.add(rel_dir)
        return True

    def _quarantine_folder(self, rel: str, mode: int) -> None:
        """Move aside what stands where a folder of the mesh should be (never following it)."""
        if rel == QUARANTINE_DIR:
            raise _not_a_folder(self.root / rel)
        self.quarantine(rel, f"is a {_kind(mode)} where a folder of the mesh should be")

    def ensure_dir(self, rel_dir: str) -> Path:
        """Create `rel_dir` (and parents) with the mesh's mode; refuse symlinked folders."""
        known = self._known_dirs.get(rel_dir)
        if known is not None:
            return known
        target = self.path(rel_dir)
        self._writable()
        self._materialize()
        for _ in range(_LINK_RETRIES):
            if self._make_dirs(rel_dir, durable=False):
                break
        else:
            raise _not_a_folder(target)
        self._known_dirs[rel_dir] = target
        self._verified_dirs.add(rel_dir)  # `_make_dirs` refused anything but real folders
        return target

    def _make_dirs(self, rel_dir: str, *, durable: bool) -> bool:
        """Create each missing folder of `rel_dir` with the mesh's mode (with `durable`, each
        new one is flushed into its parent). False when a folder vanished midway, taken by a
        concurrent `remove_dir`, or when a symlink or file in the way was quarantined: the
        caller retries."""
        current = str(self.root)
        done: list[str] = []
        for part in rel_dir.split("/"):
            parent, current = current, os.path.join(current, part)
            done.append(part)
            try:
                os.mkdir(current, self.dir_mode)
            except FileExistsError:
                try:
                    kind = os.lstat(current).st_mode
                except FileNotFoundError:
                    return False
                if not stat.S_ISDIR(kind):
                    self._quarantine_folder("/".join(done), kind)
                    return False
                continue
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise io_error("create the folder", current, exc) from exc
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

    def _write_temp(self, name: str, data: bytes, mode: int | None = None) -> str:
        """A flushed temp file holding `data`, in the staging folder (see `sweep_temp`), with
        `mode` (default: the mesh's file mode) from its creation on."""
        mode = self.file_mode if mode is None else mode
        directory = self.ensure_dir(STAGING_DIR)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, mode)
            try:
                self._exact_mode(fd, mode)
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
            raise io_error("write", directory / name, exc) from exc
        return tmp

    def _place(self, rel: str, data: bytes, *, exclusive: bool, mode: int | None = None) -> bool:
        self._writable()
        self._materialize()
        parent, _, name = rel.rpartition("/")
        directory = self.ensure_dir(parent) if parent else self.root
        tmp = self._write_temp(name, data, mode)
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
            raise io_error("write", final, exc) from exc
        finally:
            if exclusive:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._fsync_dir(directory)
        return True

    # ---- Store interface -----------------------------------------------------------------

    def read(self, rel: str) -> dict[str, Any] | None:
        """The record at `rel`; anything that is not a usable record is quarantined (None).

        Never follows a symlink and never blocks: a FIFO, socket, device or folder in a
        record's place, a file over the record size bound, bytes that are not JSON (NaN and
        Infinity included) or nest too deep, and JSON that is not an object are all moved to
        `quarantine/` unread.
        """
        if not self._folder_usable(rel.rpartition("/")[0]):
            return None
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
        if not self._folder_usable(rel.rpartition("/")[0]):
            return None
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

    def _open_file(self, target: str, flags: int) -> int:
        """A descriptor of the regular file `target`, opened without following a link or
        blocking (a FIFO, socket or device never hangs or is used); `UnusableRecord` says what
        stands there instead. FileNotFoundError when it is absent; other OSErrors pass on."""
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, self.file_mode)
        except NotADirectoryError:
            raise FileNotFoundError(target) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            try:
                mode = os.lstat(target).st_mode
            except OSError:
                mode = 0
            raise UnusableRecord(f"is a {_kind(mode)}, not a file") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UnusableRecord(f"is a {_kind(mode)}, not a file")
        return fd

    def _open_own(self, rel: str, flags: int, action: str) -> int:
        """`_open_file` for a file the mesh writes (a sidecar, the audit log): whatever stands
        in its place is quarantined and the open tried again."""
        target = self._fspath(rel)
        for _ in range(3):
            try:
                fd = self._open_file(target, flags | os.O_CREAT)
            except UnusableRecord as exc:
                self.quarantine(rel, exc.reason)
                continue
            except OSError as exc:
                raise io_error(action, target, exc) from exc
            self._exact_mode(fd)
            return fd
        raise MeshUnusable(
            f"{target} keeps being replaced by something that is not a file; find what writes "
            "there and stop it, then run `mesh doctor`",
            code="unsafe-entry",
        )

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of the regular file `rel` (at most the record bound), opened without
        following links or blocking; `UnusableRecord` says why anything else was refused."""
        return self._read_with_stat(rel)[0]

    def _read_with_stat(self, rel: str) -> tuple[bytes, os.stat_result]:
        """`read_bytes`, with the fstat of the descriptor the bytes were read from."""
        target = self._fspath(rel)
        try:
            fd = self._open_file(target, os.O_RDONLY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise io_error("read", target, exc) from exc
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
            raise io_error("read", target, exc) from exc
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
        if not self._folder_usable(rel.rpartition("/")[0]):
            return False
        target = self.path(rel)
        try:
            os.unlink(target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise io_error("remove", target, exc) from exc
        return True

    def move(self, src: str, dst: str) -> bool:
        """Atomic rename, then both folders flushed; False when `src` is gone, e.g. taken by a
        concurrent consumer (rename(2) succeeds for exactly one of them)."""
        self._writable()
        if not self._folder_usable(src.rpartition("/")[0]):
            return False
        parent = dst.rpartition("/")[0]
        if parent:
            self.ensure_dir(parent)
        source, target = self._fspath(src), self._fspath(dst)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise io_error("move", target, exc) from exc
        source_dir, target_dir = os.path.dirname(source), os.path.dirname(target)
        self._fsync_dir(target_dir)
        if source_dir != target_dir:
            self._fsync_dir(source_dir, missing_ok=True)
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
        self._materialize()
        keep_path = self._fspath(keep_as)
        targets = [self._fspath(rel) for rel in links]
        keep_dir = keep_as.rpartition("/")[0]
        if keep_dir:
            self.ensure_dir(keep_dir)
        tmp = self._write_temp(os.path.basename(targets[0]), data)
        try:
            for rel, target in zip(links, targets, strict=True):
                self._link_creating_folder(tmp, rel, target)
            os.rename(tmp, keep_path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise io_error("write", keep_path, exc) from exc
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
                raise io_error("write", target, exc) from exc
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
            raise io_error("write", target, exc) from exc
        self._fsync_dir(directory)

    def scan(
        self, rel_dir: str, suffix: str = ".json", *, depth: int = 0, remove_empty: bool = False
    ) -> Iterator[str]:
        """Names under `rel_dir` ending in `suffix` (regular files only), in path order,
        lazily: a consumer that stops early lists only the first few folders. A symlink or
        other special entry met on the way is never followed: it is quarantined."""
        if not self._folder_usable(rel_dir):
            return
        if remove_empty:
            self._writable()
        yield from self._scan(self._fspath(rel_dir), rel_dir, suffix, depth, remove_empty)

    def _scan(
        self, directory: str, rel_dir: str, suffix: str, depth: int, remove_empty: bool
    ) -> Iterator[str]:
        for entry in self._entries(directory, rel_dir):
            rel = f"{rel_dir}/{entry.name}"
            if entry.is_symlink():
                self.quarantine(rel, "is a symlink")
            elif entry.name.endswith(suffix):
                if entry.is_file(follow_symlinks=False):
                    yield rel
                else:
                    self._quarantine_entry(rel, entry)
            elif depth > 0 and entry.is_dir(follow_symlinks=False):
                yield from self._scan(entry.path, rel, suffix, depth - 1, remove_empty)
                if remove_empty:  # every entry was passed over: usually empty now
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)
                        self._forget_dir(rel)

    def _entries(
        self, directory: str, rel_dir: str, *, temps: bool = False
    ) -> list[os.DirEntry[str]]:
        """The entries of a folder, sorted by name; the store's temp files only with `temps`."""
        try:
            with os.scandir(directory) as listing:
                found = [e for e in listing if temps or not e.name.startswith(TMP_PREFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise io_error("list", self.root / rel_dir, exc) from exc
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
        if not self._folder_usable(rel_dir):
            return []
        directory = self._fspath(rel_dir)
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise io_error("list", directory, exc) from exc
        found = [
            e for e in entries if e.endswith(suffix) and (temps or not e.startswith(TMP_PREFIX))
        ]
        found.sort()
        return found

    def subdirs(self, rel_dir: str) -> list[str]:
        """Sorted names of the real folders in `rel_dir` (a symlink is never one: it and any
        file where only folders belong are quarantined)."""
        if not self._folder_usable(rel_dir):
            return []
        found = []
        for entry in self._entries(self._fspath(rel_dir), rel_dir):
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
        stale = []
        for entry in self._entries(self._fspath(STAGING_DIR), STAGING_DIR, temps=True):
            if not TEMP_NAME_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
            except FileNotFoundError:
                continue
            rel = f"{STAGING_DIR}/{entry.name}"
            if not remove or self.remove(rel):
                stale.append(rel)
        return stale

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
        self.ensure_dir(LOCK_DIR)
        fd = self._open_own(f"{LOCK_DIR}/{name}.lock", os.O_RDWR, "lock")
        try:
            _flock(fd, timeout, name)
            yield
        finally:
            os.close(fd)  # releases the flock

    def touch(self, rel: str) -> None:
        """Set the modification time to now, creating the file if needed."""
        self._writable()
        target = self.path(rel)
        parent = rel.rpartition("/")[0]
        if parent:
            self.ensure_dir(parent)
        try:
            os.utime(target, follow_symlinks=False)
        except FileNotFoundError:
            os.close(self._open_own(rel, os.O_WRONLY, "write"))
        except OSError as exc:
            raise io_error("write", target, exc) from exc

    def _exact_mode(self, fd: int, mode: int | None = None) -> None:
        """Give a file we created the mesh's mode (or `mode`), whatever the umask took away."""
        mode = self.file_mode if mode is None else mode
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != mode and info.st_uid == os.geteuid():
            os.fchmod(fd, mode)

    def append(self, rel: str, data: bytes) -> int:
        """One write(2) on an O_APPEND descriptor: lines from many processes never interleave."""
        self._writable()
        parent = rel.rpartition("/")[0]
        if parent:
            self.ensure_dir(parent)
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
        if not self._folder_usable(rel.rpartition("/")[0]):
            return None
        target = self._fspath(rel)
        try:
            fd = self._open_file(target, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except UnusableRecord as exc:
            self.quarantine(rel, exc.reason)
            return None
        except OSError as exc:
            raise io_error("read", target, exc) from exc
        return os.fdopen(fd, "rb")

    def open_file(self, rel: str) -> BinaryIO:
        """The regular file `rel` opened for reading in chunks (an attachment of any size),
        without following a link or blocking, and without moving anything aside:
        `UnusableRecord` says what stands there instead, FileNotFoundError that nothing does."""
        target = self._fspath(rel)
        try:
            fd = self._open_file(target, os.O_RDONLY)
        except (FileNotFoundError, UnusableRecord):
            raise
        except OSError as exc:
            raise io_error("read", target, exc) from exc
        return os.fdopen(fd, "rb")

    def mtime(self, rel: str) -> float | None:
        """Modification time, or None (also for a folder replaced by a symlink, which is
        quarantined: the path is never looked up through a link)."""
        if not self._folder_usable(rel.rpartition("/")[0]):
            return None
        target = self._fspath(rel)
        try:
            return os.stat(target, follow_symlinks=False).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise io_error("look at", target, exc) from exc

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
