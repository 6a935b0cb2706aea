"""`Attachments` for a PostgreSQL mesh: the bytes in `mesh_attachments`, read through a private
cache on each reading host.

A reader needs a local file, and the database may be on another machine, so `local_path` copies
an attachment's content into the reading user's own cache
(`$XDG_CACHE_HOME/drasill/attachments/<sha256>/<name>`, else `~/.cache/...`) and gives that
copy. The cache is keyed by the content's own SHA-256 (computed by `put`, whatever digest the
record claims), so broadcast copies and repeated reads share one file; a cached file is reused
only when it is a regular file of this user, private, and its content still hashes to the key,
else it is written again. Folders are 0700 and files 0600, every step below the cache root is
opened without following links (a planted link is replaced, never written through), and a file
appears whole or not at all (a temp file in the same folder, flushed, renamed into place).

A broadcast's later copies are made inside the database from the first (`same_as`): the bytes
cross the network once. Each message still owns its rows, so dropping one never touches
another's. An attachment that was dropped has no cache entry of its own: its `local_path` names a
file that does not exist (under `gone/`, never written).

A row is input from any member of the mesh, on any host: its digest and name are checked (64
lowercase hex digits; the attachment-name rule) before either names anything on disk, and a row
that fails, or whose content no longer hashes to its digest, is moved to `mesh_quarantine` (its
message is then quarantined by the mailbox: shown as damaged, the rest of the mail flowing).
Nothing here builds a path from a value that was not checked (`_key`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drasill_cli import atomicfile
from drasill_cli.backends.postgres.schema import ATTACHMENT_HARD_LIMIT
from drasill_cli.errors import InvalidInput, MeshUnusable
from drasill_cli.models import RecordError
from drasill_cli.storage.attachments import is_attachment_name
from drasill_cli.storage.mailbox import is_message_id

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

CACHE_SUBDIR = ("drasill", "attachments")
GONE_DIR = "gone"  # never written: the place a dropped attachment's path names
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_CHUNK = 1 << 20
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# The most content a quarantined attachment row keeps (as hex, in jsonb, whose values stop at
# 255 MB); a larger one keeps its id, name, size and digest only.
_KEPT_BYTES = 64 * 1024 * 1024


def is_digest(text: object) -> bool:
    """Whether `text` is a SHA-256 as the mesh stores it: 64 lowercase hex digits."""
    return isinstance(text, str) and _DIGEST_RE.fullmatch(text) is not None


def row_problem(msg_id: object, name: object, digest: object) -> str | None:
    """Why a row of `mesh_attachments` cannot name anything on disk, or None when it can."""
    if not isinstance(msg_id, str) or not is_message_id(msg_id):
        return "its message id is not one"
    if not isinstance(name, str) or not is_attachment_name(name):
        return "its name is not a plain file name"
    if not is_digest(digest):
        return "its sha256 is not 64 lowercase hex digits"
    return None


class _Damaged(Exception):
    """An attachment's stored content no longer hashes to its digest."""


def cache_root() -> Path:
    """This user's attachment cache: `$XDG_CACHE_HOME/drasill/attachments` (an absolute
    XDG_CACHE_HOME only, as the XDG spec says), else `~/.cache/drasill/attachments`."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path("~/.cache").expanduser()
    return root.joinpath(*CACHE_SUBDIR)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PostgresAttachments:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    @property
    def limit(self) -> int:
        return min(self.backend.config.messages.max_attachment_bytes, ATTACHMENT_HARD_LIMIT)

    # ---- the Attachments interface ----------------------------------------------------------

    def put(
        self, msg_id: str, files: list[tuple[str, bytes, str]], *, same_as: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of `mesh_attachments` in one transaction (with `same_as`, copied inside the
        database from that message's rows), then the sender's own cache filled from the bytes
        it already holds."""
        for name, data, _ in files:
            if not is_attachment_name(name):
                raise InvalidInput(
                    f"attachment name {name[:40]!r} is not a plain file name; rename the file",
                    code="attachment-name-invalid",
                )
            if len(data) > self.limit:
                raise InvalidInput(
                    f"attachment {name!r} is {len(data)} bytes, over the limit of {self.limit} "
                    "(messages.max_attachment_bytes); share a path to it in the body instead",
                    code="attachment-too-large",
                )
        with self.backend.transaction() as cur:
            for name, data, _ in files:
                if same_as is not None and self._copy(cur, same_as, msg_id, name, _digest(data)):
                    continue
                cur.execute(
                    "INSERT INTO mesh_attachments (message_id, name, size, sha256, data)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (message_id, name) DO UPDATE SET size = excluded.size,"
                    " sha256 = excluded.sha256, data = excluded.data, created = now()",
                    (msg_id, name, len(data), _digest(data), data),
                )
        return [
            {
                "name": name,
                "path": str(_cached(_digest(data), name, _given(data))),
                "size": len(data),
                "sha256": digest,
            }
            for name, data, digest in files
        ]

    def local_path(self, msg_id: str, name: str) -> str:
        if not is_message_id(msg_id) or not is_attachment_name(name):
            raise InvalidInput(
                f"no attachment {name[:40]!r} of message {msg_id[:40]!r} can exist: the id or "
                "the name is malformed; copy them from the message",
                code="attachment-name-invalid",
            )
        with self.backend.transaction() as cur:
            try:
                return self.path_in(cur, msg_id, name)
            except RecordError as exc:
                raise MeshUnusable(
                    f"attachment {name!r} of message {msg_id} {exc.reason}; it was set aside "
                    "in mesh_quarantine: run mesh doctor",
                    code="attachment-damaged",
                ) from None

    def path_in(self, cur: psycopg.Cursor[Any], msg_id: str, name: str) -> str:
        """`local_path` inside the caller's transaction (the mailbox reads messages in one),
        for an id and name the caller checked (`check_message`). RecordError when the row is
        damaged (its digest unusable, or its content no longer matching it): the row is moved
        to `mesh_quarantine` first, and the caller quarantines the message."""
        if not is_message_id(msg_id) or not is_attachment_name(name):
            raise RecordError(f"has an attachment with an unusable name {name[:40]!r}")
        row = cur.execute(
            "SELECT sha256 FROM mesh_attachments WHERE message_id = %s AND name = %s",
            (msg_id, name),
        ).fetchone()
        if row is None:
            return str(cache_root() / GONE_DIR / msg_id / name)
        digest = row[0]
        if not is_digest(digest):
            reason = "its sha256 is not 64 lowercase hex digits"
        else:

            def content() -> bytes | None:
                found = cur.execute(
                    "SELECT data FROM mesh_attachments WHERE message_id = %s AND name = %s",
                    (msg_id, name),
                ).fetchone()
                return bytes(found[0]) if found is not None else None

            try:
                return str(_cached(digest, name, content))
            except _Damaged:
                reason = "its content does not match its sha256"
        self._set_aside(cur, msg_id, name, reason)
        raise RecordError(f"has a damaged attachment {name[:40]!r} ({reason})")

    def _set_aside(self, cur: psycopg.Cursor[Any], msg_id: str, name: str, reason: str) -> None:
        """Move one attachment row to `mesh_quarantine`, its content as hex up to `_KEPT_BYTES`
        (a read-only view leaves it in place and only reports it)."""
        key = f"{msg_id}/{name}"
        if self.backend.read_only:
            self.backend.warnings.append(
                f"damaged attachments row {key!r} ({reason}); left in place by a read-only run"
            )
            return
        cur.execute(
            "WITH gone AS (DELETE FROM mesh_attachments WHERE message_id = %s AND name = %s"
            " RETURNING *) INSERT INTO mesh_quarantine (kind, key, reason, raw)"
            " SELECT 'attachments', %s, %s, jsonb_build_object('message_id', message_id,"
            " 'name', name, 'size', size, 'sha256', sha256, 'created', created, 'data_hex',"
            " CASE WHEN octet_length(data) <= %s THEN encode(data, 'hex') END) FROM gone",
            (msg_id, name, key, reason, _KEPT_BYTES),
        )
        if cur.rowcount:
            self.backend.warnings.append(
                f"quarantined attachments row {key!r} ({reason}); it was moved to mesh_quarantine"
            )

    def drop(self, msg_id: str) -> bool:
        """The message's rows deleted; this host's cached copies of content no other stored
        attachment holds are removed too (other hosts' caches keep theirs until cleared)."""
        if not is_message_id(msg_id):
            return False
        with self.backend.transaction() as cur:
            rows = cur.execute(
                "SELECT name, sha256 FROM mesh_attachments WHERE message_id = %s FOR UPDATE",
                (msg_id,),
            ).fetchall()
            damaged = [(n, why) for n, sha in rows if (why := row_problem(msg_id, n, sha))]
            for name, why in damaged:  # never a path: kept aside, not dropped
                self._set_aside(cur, msg_id, name, why)
            dropped = cur.execute(
                "DELETE FROM mesh_attachments WHERE message_id = %s RETURNING sha256, name",
                (msg_id,),
            ).fetchall()
            unused = [
                (sha, name)
                for sha, name in dropped
                if row_problem(msg_id, name, sha) is None
                and cur.execute(
                    "SELECT 1 FROM mesh_attachments WHERE sha256 = %s AND name = %s LIMIT 1",
                    (sha, name),
                ).fetchone()
                is None
            ]
        for sha, name in unused:
            _forget(sha, name)
        return bool(dropped or damaged)

    def orphans(self, older_than: float) -> list[str]:
        """Ids with attachment rows stored before `older_than` and no message row anywhere
        (a quarantined one included)."""
        with self.backend.transaction() as cur:
            rows = cur.execute(
                "SELECT DISTINCT a.message_id FROM mesh_attachments a"
                " WHERE a.created < to_timestamp(%s)"
                " AND NOT EXISTS (SELECT 1 FROM mesh_messages m WHERE m.id = a.message_id)"
                " AND NOT EXISTS (SELECT 1 FROM mesh_sent s WHERE s.id = a.message_id)"
                # a damaged copy keeps its files with it (its key ends with the id)
                " AND NOT EXISTS (SELECT 1 FROM mesh_quarantine q WHERE q.kind = 'messages'"
                "  AND q.key LIKE '%%/' || a.message_id)"
                " ORDER BY a.message_id",
                (older_than,),
            ).fetchall()
        return [str(row[0]) for row in rows if is_message_id(str(row[0]))]

    def _copy(
        self, cur: psycopg.Cursor[Any], source: str, msg_id: str, name: str, digest: str
    ) -> bool:
        """Copy attachment `name` of `source` to `msg_id` inside the database, if `source`
        holds that very content; False when it does not (the caller sends the bytes)."""
        cur.execute(
            "INSERT INTO mesh_attachments (message_id, name, size, sha256, data)"
            " SELECT %s, name, size, sha256, data FROM mesh_attachments"
            " WHERE message_id = %s AND name = %s AND sha256 = %s"
            " ON CONFLICT (message_id, name) DO UPDATE SET size = excluded.size,"
            " sha256 = excluded.sha256, data = excluded.data, created = now()",
            (msg_id, source, name, digest),
        )
        return cur.rowcount > 0


# ---- the private cache --------------------------------------------------------------------


def _given(data: bytes) -> Callable[[], bytes | None]:
    """The content of a file the caller already holds (no database read)."""
    return lambda: data


def _cached(digest: str, name: str, content: Callable[[], bytes | None]) -> Path:
    """The cache file holding content `digest` under `name`: reused when it is sound, else
    written from `content()` (bytes, or None when the attachment vanished meanwhile); `_Damaged`
    when that content does not hash to `digest`."""
    _key(digest, name)
    root = cache_root()
    path = root / digest / name
    try:
        folder = _private_dirs(root, digest)
        try:
            if _sound(folder, name, digest):
                return path
            data = content()
            if data is None:
                return root / GONE_DIR / digest / name
            if _digest(data) != digest:
                raise _Damaged(name)
            _write(folder, name, data)
        finally:
            os.close(folder)
    except OSError as exc:
        raise MeshUnusable(
            f"cannot keep attachment {name!r} in the local cache {root} ({exc.strerror or exc}); "
            "make the folder writable by you (or set XDG_CACHE_HOME to one that is)",
            code="attachment-cache-unusable",
        ) from None
    return path


def _key(digest: str, name: str) -> None:
    """The last guard before a digest and a name become a path in the cache: a value that is
    not one (a bug upstream, never a row: those are checked and quarantined) is refused."""
    if not is_digest(digest) or not is_attachment_name(name):
        raise MeshUnusable(
            f"refused to name a cache file after an unchecked value ({digest[:70]!r}, "
            f"{name[:40]!r}); this is a bug: report it",
            code="attachment-key-invalid",
        )


def _private_dirs(root: Path, digest: str) -> int:
    """An fd of `root/digest`, each folder from `drasill/` down made 0700 if missing and
    opened without following links; one that is not this user's private folder is refused."""
    parent = root.parents[len(CACHE_SUBDIR) - 1]  # the user's cache home: followed as it is
    parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in (*CACHE_SUBDIR, digest):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, _DIR_MODE, dir_fd=fd)
            child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
            _make_private(fd, part)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_private(fd: int, part: str) -> None:
    """Folder `fd` set to 0700; OSError when it belongs to another user (never written to)."""
    info = os.fstat(fd)
    if info.st_uid != os.getuid():
        raise OSError(f"{part} belongs to another user")
    if stat.S_IMODE(info.st_mode) != _DIR_MODE:
        os.fchmod(fd, _DIR_MODE)


def _sound(folder: int, name: str, digest: str) -> bool:
    """Whether `name` in `folder` is this user's private regular file holding `digest`."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
        )
    except OSError:
        return False  # absent, a link, or unreadable: written again
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or stat.S_IMODE(info.st_mode) & 0o077
        ):
            return False
        hasher = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            hasher.update(chunk)
        return hasher.hexdigest() == digest
    finally:
        os.close(fd)


def _write(folder: int, name: str, data: bytes) -> None:
    """`data` as `name` in `folder`, whole or not at all (temp file, flushed, renamed)."""
    temp = f".{name[:100]}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    atomicfile.replace(folder, name, data, _FILE_MODE, temp=temp)


def _forget(digest: str, name: str) -> None:
    """Remove this host's cached copy of `name` with `digest` (and its folder once empty)."""
    _key(digest, name)
    folder_path = cache_root() / digest
    try:
        folder = os.open(folder_path, _NOFOLLOW_DIR)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=folder)
    finally:
        os.close(folder)
    with contextlib.suppress(OSError):
        os.rmdir(folder_path)
