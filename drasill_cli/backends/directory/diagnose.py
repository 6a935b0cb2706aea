"""The directory mesh's own diagnosis (its part of `mesh doctor`): is the folder safe and
writable, and is every entry in it, at any depth, a usable record or folder of the mesh?

Nothing here creates or changes the mesh (a probe file is made and removed at once): doctor is
run on broken set-ups to learn why other commands refuse them. Nothing is followed through a
link and nothing is opened but regular `.json` files.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from drasill_cli.backends.directory.layout import (
    AGENTS_DIR,
    ARCHIVE_DIR,
    AUDIT_DIR,
    HEARTBEATS_DIR,
    HELD_DIR,
    INBOX_DIR,
    LOCK_TABLE_DIR,
    QUEUE_DIR,
    SENT_DIR,
    TASKS_DIR,
)
from drasill_cli.backends.directory.store import (
    LOCK_DIR,
    QUARANTINE_DIR,
    STAGING_DIR,
    TMP_PREFIX,
    FileStore,
    UnusableRecord,
    decode_record,
    folder_problem,
)
from drasill_cli.errors import MeshError
from drasill_cli.storage.maintenance import Finding

# Record folders and the kind of record each holds (a path prefix inside the mesh).
_RECORD_KINDS: tuple[tuple[str, str], ...] = (
    (f"{AGENTS_DIR}/", "agent"),
    (f"{TASKS_DIR}/", "task"),
    (f"{LOCK_TABLE_DIR}/", "lock"),
    (f"{INBOX_DIR}/", "message"),
    (f"{SENT_DIR}/", "message"),
    (f"{ARCHIVE_DIR}/", "message"),
)
# Folders whose files are not records: sidecar locks, logs, heartbeats, files being written.
_NOT_RECORDS = (f"{LOCK_DIR}/", f"{AUDIT_DIR}/", f"{HEARTBEATS_DIR}/", f"{STAGING_DIR}/")
# Task index markers live under the task folder but are not task records.
_INDEXES = (f"{QUEUE_DIR}/", f"{HELD_DIR}/")
_SHOWN = 8


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def check_mesh_dir(root: Path, *, group_shared: bool) -> Finding:
    """The mesh directory is ours, not writable by others, and writable by us."""
    if not os.path.lexists(root):
        parent = _nearest_existing(root.parent)
        if os.access(parent, os.W_OK | os.X_OK):
            return Finding(
                "mesh-dir",
                "ok",
                f"{root} does not exist yet; the first command that writes creates it (0700)",
                required=True,
            )
        return Finding(
            "mesh-dir",
            "fail",
            f"{root} does not exist and {parent} is not writable",
            "choose a mesh directory you can create: --mesh-dir DIR or DRASILL_MESH_DIR",
            required=True,
        )
    try:
        FileStore.open(root, group_shared=group_shared)
    except MeshError as exc:
        return Finding(
            "mesh-dir", "fail", f"{root}: refused ({exc.code})", exc.message, required=True
        )
    problem = _write_problem(root)
    if problem is not None:
        return Finding("mesh-dir", "fail", *problem, required=True)
    mode = "group-shared" if group_shared else "private"
    return Finding("mesh-dir", "ok", f"{root} is safe and writable ({mode})", required=True)


def _write_problem(root: Path) -> tuple[str, str] | None:
    """Why the mesh cannot be written (read-only mount, immutable, full, mode), with the fix."""
    try:
        flags = os.statvfs(root)
    except OSError as exc:
        return f"cannot inspect {root}: {exc.strerror}", "check the path and its permissions"
    if flags.f_flag & os.ST_RDONLY:
        return (
            f"{root} is on a read-only file system: no message, claim or lock can be written",
            "remount it read-write, or choose another --mesh-dir",
        )
    if flags.f_bavail * flags.f_frsize < 1024 * 1024:
        return f"the file system of {root} has less than 1 MiB free", "free disk space"
    probe = root / f"{TMP_PREFIX}doctor-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return (
                f"cannot create a file in {root}: {exc.strerror} (the folder is immutable?)",
                f"check with `lsattr -d {root}` and clear the flag with `chattr -i {root}`",
            )
        return f"cannot create a file in {root}: {exc.strerror}", f"chmod u+rwx {root}"
    return None


def _record_problem(store: FileStore, rel: str) -> str | None:
    """Why the record file `rel` cannot be used, or None when it can."""
    from drasill_cli import models

    try:
        record = decode_record(store.read_bytes(rel))
    except UnusableRecord as exc:
        return exc.reason
    except (MeshError, OSError) as exc:
        return f"cannot be read ({exc})"
    kind = next((k for prefix, k in _RECORD_KINDS if rel.startswith(prefix)), None)
    schema: type[models.Record] | None = {
        "agent": models.AgentRecord,
        "task": models.Task,
        "lock": models.LockRecord,
        "message": models.MessageRecord,
    }.get(kind or "")
    if schema is None or rel.startswith(_INDEXES):
        return None
    try:
        schema.check(record)
    except models.RecordError as exc:
        return f"is not a valid {kind} record: it {exc.reason}"
    return None


def walk_mesh(
    root: Path, max_bytes: int, *, group_shared: bool = False
) -> list[tuple[str, str, str]]:
    """Every bad entry of the mesh, at any depth: (path, what is wrong, the fix). A folder
    that is not ours or that others may write is one (every command refuses it)."""
    store = FileStore(root, group_shared=group_shared, max_record_bytes=max_bytes)
    store = store.read_only_view()  # reads only
    bad: list[tuple[str, str, str]] = []
    pending = [(str(root), "")]
    while pending:
        folder, rel_folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            bad.append((folder, f"cannot be listed ({exc.strerror})", "check its owner and mode"))
            continue
        for entry in entries:
            rel = f"{rel_folder}{entry.name}"
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and rel != QUARANTINE_DIR:
                pending.append((entry.path, f"{rel}/"))
            problem = _entry_problem(store, entry.path, rel, info)
            if problem is not None:
                bad.append((entry.path, *problem))
    return bad


def _entry_problem(
    store: FileStore, path: str, rel: str, info: os.stat_result
) -> tuple[str, str] | None:
    """What is wrong with one entry of the mesh, and the fix; None when nothing is."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        return (
            f"is a symlink (to {target}); the mesh never follows it",
            f"remove the link: rm {path}",
        )
    if stat.S_ISDIR(mode):
        problem = folder_problem(info, group_shared=store.group_shared)
        return None if problem is None else (problem[1], problem[2].format(path=path))
    if not stat.S_ISREG(mode):
        return "is a FIFO, socket or device", f"remove it: rm {path}"
    name = rel.rpartition("/")[2]
    # Sidecars, logs, heartbeats and temp files (of an older version too) are not records.
    record = not rel.startswith(_NOT_RECORDS) and not name.startswith(TMP_PREFIX)
    unusable = _record_problem(store, rel) if record and name.endswith(".json") else None
    if unusable is None:
        return None
    return (
        unusable,
        f"move it into {store.root / QUARANTINE_DIR} (any mesh command that reads it does so "
        "itself)",
    )


def check_mesh_entries(root: Path, max_record_bytes: int, *, group_shared: bool = False) -> Finding:
    """Every entry of the mesh, at every depth: no symlinks or special files, no folder others
    may write, every record usable; quarantined files are pointed out."""
    if os.path.lexists(root) and not root.is_dir():
        return Finding(
            "mesh-entries",
            "fail",
            f"{root} is not a directory: nothing can be stored there",
            "choose another mesh directory (--mesh-dir DIR or DRASILL_MESH_DIR), or move it",
            required=True,
        )
    if not root.is_dir() or root.is_symlink():
        return Finding("mesh-entries", "ok", "nothing stored yet", required=True)
    bad = walk_mesh(root, max_record_bytes, group_shared=group_shared)
    if bad:
        shown = "; ".join(f"{path} {problem}" for path, problem, _ in bad[:_SHOWN])
        more = f" (and {len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        fixes = "; ".join(dict.fromkeys(fix for _, _, fix in bad[:_SHOWN]))
        return Finding(
            "mesh-entries",
            "fail",
            f"{len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'} in the mesh: {shown}{more}",
            fixes,
            required=True,
        )
    quarantine = root / QUARANTINE_DIR
    damaged = sum(1 for _ in quarantine.iterdir()) if quarantine.is_dir() else 0
    if damaged:
        return Finding(
            "mesh-entries",
            "warn",
            f"{damaged} damaged file(s) kept in {quarantine}",
            "inspect them, then delete them when they are not needed",
        )
    return Finding(
        "mesh-entries", "ok", "every entry is a usable record or folder of the mesh", required=True
    )
