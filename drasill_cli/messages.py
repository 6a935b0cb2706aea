"""Messages: send, consume exactly once, peek, list, wait, history, archive.

Each inbox is a maildir (`inbox/NAME/{tmp,new,cur}`), so senders never take a lock:
- a sender writes the message into `tmp/`, fsyncs it, hard-links it into `new/` and then renames
  the temp name into `sent/FROM/ID.json` (its history entry), fsyncing each folder it changed.
  A killed sender leaves at most a whole `.tmp-*` file in `tmp/` (never read; prune clears it);
- a reader consumes by renaming the file from `new/` into `cur/`: rename(2) succeeds for exactly
  one of any number of racing readers, the others get ENOENT and try the next message.

File names carry the order: `<rank>-<id>.json`, rank 0 for urgent and 1 for normal, and ids sort
in creation order, so a sorted listing is urgent first, then oldest first, without parsing.
`new/` is sharded by rank and by the id's time characters into three folder levels (about 18
minutes, 1 second, 33 ms wide), so finding the next message lists a few small folders instead of
every unread name: consuming with 10,000 unread costs about what it costs with 10. Consumers
remove the empty shards they pass; a sender whose shard vanished under it simply recreates it.

This module is on the hot path of `mesh send` and `mesh inbox`: it imports nothing heavy
(watchfiles only inside `wait_for`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.errors import InvalidInput, MeshError, MeshUnusable, NotFound
from drasill_cli.names import check_agent_name
from drasill_cli.store import TMP_PREFIX, StoreFull

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

PRIORITIES = ("normal", "urgent")
_RANK = {"urgent": "0", "normal": "1"}
INBOX_DIR = "inbox"
SENT_DIR = "sent"
ATTACHMENTS_DIR = "attachments"
# File names are at most 255 bytes, and the store writes through a longer temp name first.
MAX_ATTACHMENT_NAME_BYTES = 200
ARCHIVE_DIR = "archive"
MAILDIR_TMP = "tmp"
# Slices of the id's 13 time characters (5 bits each) that name the shard folders of `new/`.
_SHARDS = ((0, 5), (5, 7), (7, 8))
_ID_RE = re.compile(r"m-[0-9a-z]{13}-[0-9a-z]{4}")
_LINK_RETRIES = 50
# Events wake `wait_for`; this re-check only guards against an event the kernel dropped.
_WAIT_RECHECK_S = 5.0


# ---- layout --------------------------------------------------------------------------------


def _rank(priority: str) -> str:
    return _RANK[priority]


def _file_name(msg_id: str, priority: str) -> str:
    return f"{_rank(priority)}-{msg_id}.json"


def _shard(msg_id: str, rank: str) -> list[str]:
    """The shard folders under `new/` for a message: `<rank>-<t0..t4>/<t5t6>/<t7>`."""
    stamp = msg_id.split("-")[1]
    first, *rest = (stamp[a:b] for a, b in _SHARDS)
    return [f"{rank}-{first}", *rest]


def _id_of(file_name: str) -> str:
    """`1-m-....json` (inbox) or `m-....json` (sent) to the message id."""
    stem = file_name.removesuffix(".json")
    return stem.split("-", 1)[1] if stem[:1] in ("0", "1") and stem[1:2] == "-" else stem


def _modes(mesh: Mesh) -> tuple[int, int]:
    """(directory mode, file mode) the store uses for this mesh."""
    return (0o2770, 0o660) if mesh.config.group_shared else (0o700, 0o600)


def _fsync_dir(directory: str, *, missing_ok: bool = False) -> None:
    """Make a rename or link durable; `missing_ok` where a consumer may have removed the shard."""
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


def _io_error(target: str, exc: OSError) -> MeshError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return StoreFull(
            f"could not write {target}: {exc.strerror}; free disk space (or fix the file "
            "system) and send again",
        )
    return MeshUnusable(
        f"could not write {target}: {exc.strerror}; check the mesh directory with `mesh doctor`",
        code="store-write-failed",
    )


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Box:
    """Paths of one agent's maildir."""

    def __init__(self, mesh: Mesh, name: str) -> None:
        self.rel = f"{INBOX_DIR}/{name}"
        root = str(mesh.store.path(self.rel))
        self.new = os.path.join(root, "new")
        self.cur = os.path.join(root, "cur")

    def exists(self) -> bool:
        return os.path.isdir(self.new)

    def rel_of(self, path: str) -> str:
        """The store name of a file under this inbox."""
        return f"{self.rel}/{os.path.relpath(path, os.path.dirname(self.new))}"

    def unread(self, *, tidy: bool = False) -> Iterator[tuple[str, str]]:
        """(folder, file name) of each unread message in delivery order, listed lazily.

        With `tidy`, empty shard folders met on the way are removed (consumers do this).
        """
        yield from _walk(self.new, 0, tidy)


def _walk(directory: str, depth: int, tidy: bool) -> Iterator[tuple[str, str]]:
    try:
        entries = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.startswith(TMP_PREFIX):
            continue
        if entry.endswith(".json"):
            yield directory, entry
        elif depth < len(_SHARDS):
            yield from _walk(os.path.join(directory, entry), depth + 1, tidy)
    if tidy and depth > 0:
        # Reached only once every entry was passed over: the shard is usually empty now.
        with contextlib.suppress(OSError):
            os.rmdir(directory)


# ---- validation ----------------------------------------------------------------------------


def _check_body(mesh: Mesh, body: str) -> int:
    """Size in bytes of a valid body; empty, oversized or non-UTF-8 bodies are refused."""
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(
            "the message body is not valid UTF-8; send text (put binary data in --attach FILE)",
            code="invalid-body",
        ) from None
    if not body.strip():
        raise InvalidInput(
            "the message body is empty; give it as an argument or on stdin", code="empty-body"
        )
    limit = mesh.config.messages.max_body_bytes
    if size > limit:
        raise InvalidInput(
            f"the message body is {size} bytes, over the limit of {limit} "
            "(messages.max_body_bytes); shorten it or send the text as --attach FILE",
            code="body-too-large",
        )
    return size


def _recipients(mesh: Mesh, to: str, sender: str) -> list[str]:
    check_agent_name(to, allow_all=True)
    if to == "all":
        return [name for name in mesh.agent_names() if name != sender]
    if not mesh.is_registered(to):
        raise NotFound(
            f"no agent named {to!r} is registered; see `mesh agents --all` for who can "
            "receive mail",
            code="unknown-agent",
        )
    return [to]


def _read_attachments(mesh: Mesh, paths: Iterable[str]) -> list[tuple[str, bytes, str]]:
    """(name, content, sha256) of each file, read whole before anything is written."""
    paths = list(paths)
    limits = mesh.config.messages
    if len(paths) > limits.max_attachments:
        raise InvalidInput(
            f"{len(paths)} attachments given, the limit is {limits.max_attachments} "
            "(messages.max_attachments); bundle them into an archive",
            code="too-many-attachments",
        )
    found: list[tuple[str, bytes, str]] = []
    for given in paths:
        name = os.path.basename(os.path.normpath(given))
        if any(ord(c) < 32 or ord(c) == 127 for c in name) or name in ("", ".", ".."):
            raise InvalidInput(
                f"attachment {given!r} has no usable file name; rename the file",
                code="invalid-attachment",
            )
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > MAX_ATTACHMENT_NAME_BYTES:
            raise InvalidInput(
                f"attachment file name {_abbreviated(name)!r} is {size} bytes long (UTF-8), "
                f"over the limit of {MAX_ATTACHMENT_NAME_BYTES} bytes; rename the file (or "
                "copy it to a shorter name) and attach that",
                code="invalid-attachment",
            )
        if name in {n for n, _, _ in found}:
            raise InvalidInput(
                f"two attachments are named {name!r}; rename one of them",
                code="invalid-attachment",
            )
        data = _read_file(given, limits.max_attachment_bytes)
        found.append((name, data, hashlib.sha256(data).hexdigest()))
    return found


def _abbreviated(name: str, keep: int = 40) -> str:
    return name if len(name) <= keep else name[:keep] + "..."


def _read_file(given: str, limit: int) -> bytes:
    try:
        # O_NONBLOCK: a FIFO given by mistake must not hang the command.
        fd = os.open(given, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read attachment {given!r}: {exc.strerror}; check the path and its permissions",
            code="unreadable-attachment",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(
                f"attachment {given!r} is not a regular file; attach files only",
                code="unreadable-attachment",
            )
        if info.st_size > limit:
            raise _too_large(given, info.st_size, limit)
        chunks = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(given, total, limit)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read attachment {given!r}: {exc.strerror}", code="unreadable-attachment"
        ) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _too_large(given: str, size: int, limit: int) -> InvalidInput:
    return InvalidInput(
        f"attachment {given!r} is {size} bytes, over the limit of {limit} "
        "(messages.max_attachment_bytes); share a path to it in the body instead",
        code="attachment-too-large",
    )


def _check_id(msg_id: str) -> str:
    if not _ID_RE.fullmatch(msg_id):
        shown = msg_id.encode("unicode_escape").decode("ascii")
        raise InvalidInput(
            f"{shown!r} is not a message id (they look like m-01jd3f8k2q4c7x-9zk2); "
            "copy it from `mesh inbox` or `mesh history`",
            code="invalid-message-id",
        )
    return msg_id


# ---- sending -------------------------------------------------------------------------------


def send(
    mesh: Mesh,
    to: str,
    body: str,
    *,
    sender: str,
    priority: str = "normal",
    reply_to: str | None = None,
    attachments: Iterable[str] = (),
    wake: bool = True,
) -> list[dict[str, Any]]:
    """Deliver `body` to `to` (or to every other agent for `all`); one message per recipient.

    Everything is checked before anything is written, so refused input leaves no trace.
    """
    check_agent_name(sender)
    if priority not in PRIORITIES:
        raise InvalidInput(
            f"--priority must be normal or urgent, got {priority!r}", code="invalid-priority"
        )
    _check_body(mesh, body)
    recipients = _recipients(mesh, to, sender)
    thread = None
    if reply_to is not None:
        original = find(mesh, _check_id(reply_to))
        if original is None:
            raise NotFound(
                f"no message with id {reply_to!r} to reply to; check the id with `mesh history`",
                code="unknown-message",
            )
        thread = original.get("thread") or original.get("id")
    files = _read_attachments(mesh, attachments)
    sent: list[dict[str, Any]] = []
    first_copy: dict[str, str] = {}
    for recipient in recipients:
        msg_id = clock.new_id("m")
        message = {
            "id": msg_id,
            "from": sender,
            "to": recipient,
            "body": body,
            "priority": priority,
            "created_at": clock.iso(),
            "reply_to": reply_to,
            "thread": thread or msg_id,
            "attachments": _store_attachments(mesh, msg_id, files, first_copy),
            "wake": wake,
        }
        _deliver(mesh, message)
        mesh.record(
            "send",
            sender,
            id=msg_id,
            to=recipient,
            priority=priority,
            thread=message["thread"],
            attachments=len(files),
            wake=wake,
        )
        sent.append(message)
    return sent


def _store_attachments(
    mesh: Mesh, msg_id: str, files: list[tuple[str, bytes, str]], first_copy: dict[str, str]
) -> list[dict[str, Any]]:
    """Copy the files under `attachments/<id>/`; later recipients of a broadcast get hard links.

    Each message owns its own links, so archiving one message never breaks another's files.
    """
    described: list[dict[str, Any]] = []
    try:
        for name, data, digest in files:
            rel = f"{ATTACHMENTS_DIR}/{msg_id}/{name}"
            target = str(mesh.store.path(rel))
            if name in first_copy:
                mesh.store.ensure_dir(f"{ATTACHMENTS_DIR}/{msg_id}")
                try:
                    os.link(first_copy[name], target)
                except OSError as exc:
                    raise _io_error(target, exc) from exc
            else:
                mesh.store.write_bytes(rel, data)
                first_copy[name] = target
            described.append({"name": name, "path": target, "size": len(data), "sha256": digest})
    except (MeshError, OSError):
        _discard_attachments(mesh, msg_id, described)
        raise
    return described


def _discard_attachments(mesh: Mesh, msg_id: str, described: list[dict[str, Any]]) -> None:
    """Undo a half-stored message's attachments (best effort): no message refers to them."""
    for item in described:
        with contextlib.suppress(OSError):
            os.unlink(item["path"])
    with contextlib.suppress(OSError):
        os.rmdir(mesh.store.path(f"{ATTACHMENTS_DIR}/{msg_id}"))


def _deliver(mesh: Mesh, message: dict[str, Any]) -> None:
    """tmp/ (fsync) -> hard link into new/<shard>/ -> rename into sent/FROM/; fsync folders."""
    store = mesh.store
    box = _Box(mesh, message["to"])
    dir_mode, file_mode = _modes(mesh)
    tmp_dir = str(store.ensure_dir(f"{box.rel}/{MAILDIR_TMP}"))
    store.ensure_dir(f"{box.rel}/new")
    sent_dir = str(store.ensure_dir(f"{SENT_DIR}/{message['from']}"))
    name = _file_name(message["id"], message["priority"])
    tmp = os.path.join(tmp_dir, f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{name}")
    try:
        _write_synced(tmp, _encode(message), file_mode, fix_mode=mesh.config.group_shared)
        shard = _shard(message["id"], _rank(message["priority"]))
        leaf = _link_into_shard(tmp, box.new, shard, name, dir_mode)
        os.rename(tmp, os.path.join(sent_dir, f"{message['id']}.json"))
        _fsync_dir(leaf, missing_ok=True)
        _fsync_dir(sent_dir)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _io_error(box.new, exc) from exc
        raise


def _write_synced(path: str, data: bytes, file_mode: int, *, fix_mode: bool) -> None:
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode
    )
    try:
        if fix_mode:
            os.fchmod(fd, file_mode)  # the umask may have dropped the group bits
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_into_shard(tmp: str, new_dir: str, shard: list[str], name: str, dir_mode: int) -> str:
    """Hard-link `tmp` into its shard folder, recreating folders a consumer removed meanwhile."""
    leaf = os.path.join(new_dir, *shard)
    target = os.path.join(leaf, name)
    for _ in range(_LINK_RETRIES):
        try:
            os.link(tmp, target)
        except FileNotFoundError:
            _make_shard(new_dir, shard, dir_mode)
            continue
        return leaf
    raise MeshUnusable(
        f"could not deliver into {leaf}: its folder kept disappearing; check the mesh "
        "directory with `mesh doctor`",
        code="store-write-failed",
    )


def _make_shard(new_dir: str, shard: list[str], dir_mode: int) -> None:
    """Create the shard folders. A consumer may remove an empty one at any instant; then this
    stops early and the caller's next link attempt finds out what is still missing."""
    levels = [new_dir]
    for part in shard:
        levels.append(os.path.join(levels[-1], part))
    for folder in levels:
        try:
            os.mkdir(folder, dir_mode)
            os.chmod(folder, dir_mode)
            _fsync_dir(os.path.dirname(folder))
        except FileExistsError:
            try:
                kind = os.lstat(folder).st_mode
            except FileNotFoundError:
                return  # a consumer removed the empty shard just now: the caller retries
            if not stat.S_ISDIR(kind):
                raise MeshUnusable(
                    f"{folder} should be a folder of the mesh but is a symlink or a file; "
                    "move it away and send again",
                    code="unsafe-entry",
                ) from None
        except FileNotFoundError:
            return


# ---- reading -------------------------------------------------------------------------------


def _require_inbox(mesh: Mesh, name: str) -> _Box:
    """The agent's maildir; NotFound for a name that is neither registered nor has mail."""
    check_agent_name(name)
    box = _Box(mesh, name)
    if not mesh.is_registered(name) and not box.exists():
        raise NotFound(
            f"no agent named {name!r} is registered and it has no mail; see `mesh agents --all`",
            code="unknown-agent",
        )
    return box


def _load(mesh: Mesh, rel: str) -> dict[str, Any] | None:
    """A message file, or None when it vanished or is damaged (then it is quarantined)."""
    record = mesh.store.read(rel)
    if record is None:
        return None
    if not isinstance(record.get("id"), str) or not isinstance(record.get("body"), str):
        mesh.store.quarantine(rel, "is not a message")
        return None
    return record


def consume(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """Take the next message (urgent first, then oldest): exactly one reader gets each one."""
    box = _require_inbox(mesh, name)
    cur_ready = False
    for folder, file_name in box.unread(tidy=True):
        if not cur_ready:
            mesh.store.ensure_dir(f"{box.rel}/cur")
            cur_ready = True
        try:
            os.rename(os.path.join(folder, file_name), os.path.join(box.cur, file_name))
        except FileNotFoundError:
            continue  # another reader took it first
        except OSError as exc:
            raise _io_error(box.cur, exc) from exc
        _fsync_dir(box.cur)
        _fsync_dir(folder, missing_ok=True)
        message = _load(mesh, f"{box.rel}/cur/{file_name}")
        if message is None:
            continue
        mesh.record("consume", name, id=message["id"], sender=message.get("from"))
        return message
    return None


def peek(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """The message `consume` would take next, left unread."""
    box = _require_inbox(mesh, name)
    for folder, file_name in box.unread():
        message = _load(mesh, box.rel_of(os.path.join(folder, file_name)))
        if message is not None:
            return message
    return None


def list_unread(mesh: Mesh, name: str) -> list[dict[str, Any]]:
    """Every unread message in consume order, left unread."""
    box = _require_inbox(mesh, name)
    found = []
    for folder, file_name in box.unread():
        message = _load(mesh, box.rel_of(os.path.join(folder, file_name)))
        if message is not None:
            found.append(message)
    return found


def unread_count(mesh: Mesh, name: str) -> int:
    """Unread messages in the agent's inbox (names only, nothing parsed)."""
    return sum(1 for _ in _Box(mesh, name).unread())


def wait_for(mesh: Mesh, name: str, timeout: float) -> bool:
    """Block until the inbox has unread mail (True) or `timeout` seconds pass (False).

    Woken by file-system events (watchfiles), not a sleep loop. The watcher starts before the
    first look, so a message arriving in between is never missed.
    """
    if not timeout >= 0:
        raise InvalidInput(
            f"--wait must be zero or more seconds, got {timeout}", code="invalid-wait"
        )
    box = _require_inbox(mesh, name)
    if timeout == 0:
        return next(box.unread(), None) is not None
    mesh.store.ensure_dir(f"{box.rel}/new")
    from watchfiles._rust_notify import RustNotify

    deadline = time.monotonic() + timeout
    with RustNotify([box.new], False, False, 50, True, False) as notify:
        while True:
            if next(box.unread(), None) is not None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            step_ms = max(1, int(min(remaining, _WAIT_RECHECK_S) * 1000))
            if notify.watch(50, 5, step_ms, None) == "signal":
                raise KeyboardInterrupt


# ---- history, lookup, archive --------------------------------------------------------------


def history(mesh: Mesh, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Messages `name` sent or consumed, newest first, at most `limit`."""
    check_agent_name(name)
    if limit < 1:
        raise InvalidInput(f"--limit must be 1 or more, got {limit}", code="invalid-limit")
    rels = {_id_of(n): f"{SENT_DIR}/{name}/{n}" for n in mesh.store.names(f"{SENT_DIR}/{name}")}
    cur = f"{INBOX_DIR}/{name}/cur"
    rels.update({_id_of(n): f"{cur}/{n}" for n in mesh.store.names(cur)})
    found: list[dict[str, Any]] = []
    for msg_id in sorted(rels, reverse=True):
        message = _load(mesh, rels[msg_id])
        if message is not None:
            found.append(message)
            if len(found) == limit:
                break
    return found


def find(mesh: Mesh, msg_id: str) -> dict[str, Any] | None:
    """The message with this id wherever it is (sent, unread, consumed, archived), or None.

    Every location is derived from the id, so this is a few stats per agent, not a scan.
    """
    _check_id(msg_id)
    candidates = [f"{SENT_DIR}/{s}/{msg_id}.json" for s in _subdirs(mesh, SENT_DIR)]
    for agent in _subdirs(mesh, INBOX_DIR):
        for rank in _RANK.values():
            name = f"{rank}-{msg_id}.json"
            shard = "/".join(_shard(msg_id, rank))
            candidates += [
                f"{INBOX_DIR}/{agent}/cur/{name}",
                f"{INBOX_DIR}/{agent}/new/{shard}/{name}",
            ]
    for agent in _subdirs(mesh, ARCHIVE_DIR):
        candidates += [f"{ARCHIVE_DIR}/{agent}/{r}-{msg_id}.json" for r in _RANK.values()]
    for rel in candidates:
        if mesh.store.mtime(rel) is not None:
            message = _load(mesh, rel)
            if message is not None:
                return message
    return None


def _subdirs(mesh: Mesh, rel_dir: str) -> list[str]:
    try:
        return sorted(os.listdir(mesh.store.path(rel_dir)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def archive_inbox(mesh: Mesh, name: str) -> int:
    """Move a removed agent's unread mail to `archive/NAME/` (never deleted); returns how many.

    The attachment files of archived messages are removed: nobody is left to read them.
    """
    check_agent_name(name)
    box = _Box(mesh, name)
    moved = 0
    for folder, file_name in box.unread(tidy=True):
        rel = box.rel_of(os.path.join(folder, file_name))
        message = _load(mesh, rel)
        if message is not None and mesh.store.move(rel, f"{ARCHIVE_DIR}/{name}/{file_name}"):
            moved += 1
            _remove_attachments(mesh, message)
    if moved:
        mesh.record("archive-inbox", None, agent=name, messages=moved)
    return moved


def _remove_attachments(mesh: Mesh, message: dict[str, Any]) -> None:
    msg_id = message.get("id")
    if not isinstance(msg_id, str) or not _ID_RE.fullmatch(msg_id):
        return
    for attachment in message.get("attachments") or []:
        name = attachment.get("name") if isinstance(attachment, dict) else None
        if isinstance(name, str) and name and "/" not in name and name not in (".", ".."):
            mesh.store.remove(f"{ATTACHMENTS_DIR}/{msg_id}/{name}")
    with contextlib.suppress(OSError):  # absent, or holds files this message does not own
        os.rmdir(mesh.store.path(f"{ATTACHMENTS_DIR}/{msg_id}"))
