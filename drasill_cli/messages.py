"""Messages: send, consume exactly once, peek, list, wait, history, archive.

Each inbox is a maildir (`inbox/NAME/{new,cur}`), so senders never take a lock:
- a sender publishes the message (`Store.publish`): written into the store's staging folder and
  flushed, hard-linked into `new/`, whose folder is flushed, and the temp name renamed into
  `sent/FROM/ID.json` (its history entry). A killed sender leaves at most a whole temp file in
  the staging folder (never read; prune clears it). `sent/` is not flushed: it is history,
  not delivery; after a power loss the entry may be missing or still under its temp name, but
  the delivered copy in `new/` is there;
- a reader consumes by moving the file from `new/` into `cur/` (`Store.move`): rename(2)
  succeeds for exactly one of any number of racing readers, the others try the next message.

File names carry the order: `<rank>-<id>.json`, rank 0 for urgent and 1 for normal, and ids sort
in creation order, so a sorted listing is urgent first, then oldest first, without parsing.
`new/` is sharded by rank and by the id's time characters into three folder levels (about 18
minutes, 1 second, 33 ms wide), so finding the next message lists a few small folders instead of
every unread name: consuming with 10,000 unread costs about what it costs with 10. Consumers
remove the empty shards they pass; a sender whose shard vanished under it simply recreates it.

Every file operation goes through `mesh.store`. This module is on the hot path of `mesh send`
and `mesh inbox`: it imports nothing heavy (watchfiles only inside `wait_for`, via events.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.backends.directory.store import encode_record
from drasill_cli.errors import InvalidInput, MeshError, NotFound
from drasill_cli.models import MessageRecord, RecordError
from drasill_cli.names import check_agent_name, has_control_chars

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
# Slices of the id's 13 time characters (5 bits each) that name the shard folders of `new/`.
_SHARDS = ((0, 5), (5, 7), (7, 8))
_ID_RE = re.compile(r"m-[0-9a-z]{13}-[0-9a-z]{4}")
# Events wake `wait_for`; this re-check only guards against an event the kernel dropped.
_WAIT_RECHECK_S = 5.0


# ---- layout --------------------------------------------------------------------------------


def _file_name(msg_id: str, rank: str) -> str:
    """`<rank>-<id>.json`: a sorted listing is urgent first, then oldest first."""
    return f"{rank}-{msg_id}.json"


def _shard(msg_id: str, rank: str) -> list[str]:
    """The shard folders under `new/` for a message: `<rank>-<t0..t4>/<t5t6>/<t7>`."""
    stamp = msg_id.split("-")[1]
    first, *rest = (stamp[a:b] for a, b in _SHARDS)
    return [f"{rank}-{first}", *rest]


def _id_of(file_name: str) -> str:
    """`1-m-....json` (inbox) or `m-....json` (sent) to the message id."""
    stem = file_name.removesuffix(".json")
    return stem.split("-", 1)[1] if stem[:1] in ("0", "1") and stem[1:2] == "-" else stem


class _Box:
    """Store names of one agent's maildir."""

    def __init__(self, mesh: Mesh, name: str) -> None:
        self.store = mesh.store
        self.rel = f"{INBOX_DIR}/{name}"
        self.new = f"{self.rel}/new"
        self.cur = f"{self.rel}/cur"

    def exists(self) -> bool:
        return self.store.mtime(self.new) is not None

    def unread(self, *, tidy: bool = False) -> Iterator[str]:
        """Store names of the unread messages in delivery order, listed lazily.

        With `tidy`, empty shard folders met on the way are removed (consumers do this).
        """
        return self.store.scan(self.new, depth=len(_SHARDS), remove_empty=tidy)


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
        if has_control_chars(name) or name in ("", ".", ".."):
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
        message: dict[str, Any] = {
            "id": msg_id,
            "from": sender,
            "to": recipient,
            "body": body,
            "priority": priority,
            "created_at": clock.iso(),
            "reply_to": reply_to,
            "thread": thread or msg_id,
            "attachments": [],
            "wake": wake,
        }
        try:
            message["attachments"] = _store_attachments(mesh, msg_id, files, first_copy)
            _deliver(mesh, message)
        except (MeshError, OSError) as exc:
            with contextlib.suppress(MeshError, OSError):
                remove_attachment_folder(mesh, msg_id)
            if sent and isinstance(exc, MeshError):
                raise _broadcast_cut_short(exc, sent, recipients[len(sent) :]) from exc
            raise
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


def _broadcast_cut_short(
    cause: MeshError, sent: list[dict[str, Any]], missed: list[str]
) -> MeshError:
    """The error for a broadcast that failed partway: who has the message and who does not,
    so the sender resends to the rest instead of to `all` (which would deliver twice)."""
    reason = cause.message.split(";", 1)[0]
    delivered = ", ".join(message["to"] for message in sent)
    return type(cause)(
        f"the broadcast reached {delivered} but not {', '.join(missed)} ({reason}); "
        f"once that is fixed, send to each of {', '.join(missed)} by name, not to `all` "
        "again, which would deliver twice",
        code=cause.code,
        delivered=[message["id"] for message in sent],
        not_delivered=missed,
    )


def _store_attachments(
    mesh: Mesh, msg_id: str, files: list[tuple[str, bytes, str]], first_copy: dict[str, str]
) -> list[dict[str, Any]]:
    """Copy the files under `attachments/<id>/`; later recipients of a broadcast get hard links.

    Each message owns its own links, so archiving one message never breaks another's files.
    On failure the caller removes the message's folder (`remove_attachment_folder`).
    """
    described: list[dict[str, Any]] = []
    for name, data, digest in files:
        rel = f"{ATTACHMENTS_DIR}/{msg_id}/{name}"
        if name in first_copy:
            mesh.store.link(first_copy[name], rel)
        else:
            mesh.store.write_bytes(rel, data)
            first_copy[name] = rel
        target = str(mesh.store.path(rel))
        described.append({"name": name, "path": target, "size": len(data), "sha256": digest})
    return described


def _deliver(mesh: Mesh, message: dict[str, Any]) -> None:
    """Staged in the inbox's tmp/, linked into new/<shard>/ (flushed), kept in sent/FROM/."""
    box = _Box(mesh, message["to"])
    rank = _RANK[message["priority"]]
    shard = "/".join(_shard(message["id"], rank))
    mesh.store.publish(
        encode_record(message),
        links=[f"{box.new}/{shard}/{_file_name(message['id'], rank)}"],
        keep_as=f"{SENT_DIR}/{message['from']}/{message['id']}.json",
    )


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
    """A message file, or None when it vanished or is damaged (then it is quarantined).

    The message is checked whole (every key the contract names, of the right type), so a
    message that is returned can always be shown.
    """
    record = mesh.store.read(rel)
    if record is None:
        return None
    try:
        message = MessageRecord.check(record)
    except RecordError as exc:
        mesh.store.quarantine(rel, f"is not a message: it {exc.reason}")
        return None
    if not _ID_RE.fullmatch(message["id"]):
        mesh.store.quarantine(rel, "is not a message: it has a bad id")
        return None
    return message


def consume(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """Take the next message (urgent first, then oldest): exactly one reader gets each one."""
    box = _require_inbox(mesh, name)
    for rel in box.unread(tidy=True):
        message = _load(mesh, rel)  # checked before it is taken: only a showable one is
        if message is None:
            continue
        if not mesh.store.move(rel, f"{box.cur}/{rel.rpartition('/')[2]}"):
            continue  # another reader took it first
        mesh.record("consume", name, id=message["id"], sender=message.get("from"))
        return message
    return None


def peek(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """The message `consume` would take next, left unread."""
    box = _require_inbox(mesh, name)
    for rel in box.unread():
        message = _load(mesh, rel)
        if message is not None:
            return message
    return None


def list_unread(mesh: Mesh, name: str) -> list[dict[str, Any]]:
    """Every unread message in consume order, left unread."""
    box = _require_inbox(mesh, name)
    found = []
    for rel in box.unread():
        message = _load(mesh, rel)
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
    from drasill_cli.storage.changes import inbox

    deadline = time.monotonic() + timeout
    with mesh.backend.changes.watch(inbox(name)) as new_mail:
        while True:
            if next(box.unread(), None) is not None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            new_mail.wait(min(remaining, _WAIT_RECHECK_S))


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


def archived(mesh: Mesh, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Unread mail archived when `name` was unregistered or removed, newest first."""
    check_agent_name(name)
    if limit < 1:
        raise InvalidInput(f"--limit must be 1 or more, got {limit}", code="invalid-limit")
    folder = f"{ARCHIVE_DIR}/{name}"
    found: list[dict[str, Any]] = []
    for file_name in sorted(mesh.store.names(folder), key=_id_of, reverse=True):
        message = _load(mesh, f"{folder}/{file_name}")
        if message is not None:
            found.append(message)
            if len(found) == limit:
                break
    return found


def find(mesh: Mesh, msg_id: str) -> dict[str, Any] | None:
    """The message with this id wherever it is (sent, unread, consumed, archived), or None.

    Every location is derived from the id, so this is a few stats per agent, not a scan.
    """
    return _find_in(mesh, _check_id(msg_id), _mail_folders(mesh))


def _mail_folders(mesh: Mesh) -> tuple[list[str], list[str], list[str]]:
    """The agents with a `sent/`, an `inbox/` and an `archive/` folder."""
    return _subdirs(mesh, SENT_DIR), _subdirs(mesh, INBOX_DIR), _subdirs(mesh, ARCHIVE_DIR)


def _find_in(
    mesh: Mesh, msg_id: str, folders: tuple[list[str], list[str], list[str]]
) -> dict[str, Any] | None:
    senders, inboxes, archives = folders
    candidates = [f"{SENT_DIR}/{s}/{msg_id}.json" for s in senders]
    for agent in inboxes:
        for rank in _RANK.values():
            name = _file_name(msg_id, rank)
            shard = "/".join(_shard(msg_id, rank))
            candidates += [
                f"{INBOX_DIR}/{agent}/cur/{name}",
                f"{INBOX_DIR}/{agent}/new/{shard}/{name}",
            ]
    for agent in archives:
        candidates += [f"{ARCHIVE_DIR}/{agent}/{_file_name(msg_id, r)}" for r in _RANK.values()]
    for rel in candidates:
        if mesh.store.mtime(rel) is not None:
            message = _load(mesh, rel)
            if message is not None:
                return message
    return None


def _subdirs(mesh: Mesh, rel_dir: str) -> list[str]:
    return mesh.store.subdirs(rel_dir)


def archive_inbox(mesh: Mesh, name: str) -> int:
    """Move a removed agent's unread mail to `archive/NAME/` (never deleted); returns how many.

    The attachment files of archived messages are removed: nobody is left to read them.
    """
    check_agent_name(name)
    box = _Box(mesh, name)
    moved = 0
    for rel in box.unread(tidy=True):
        message = _load(mesh, rel)
        file_name = rel.rpartition("/")[2]
        if message is not None and mesh.store.move(rel, f"{ARCHIVE_DIR}/{name}/{file_name}"):
            moved += 1
            remove_attachment_folder(mesh, _id_of(file_name))
    if moved:
        mesh.record("archive-inbox", None, agent=name, messages=moved)
    return moved


def expired_history(mesh: Mesh, cutoff: float) -> list[str]:
    """Sent and consumed copies (`sent/`, `cur/`) of messages created before `cutoff`.

    Unread and archived mail is never included. The time comes from the id in the file name,
    so nothing is opened.
    """
    folders = [f"{SENT_DIR}/{sender}" for sender in _subdirs(mesh, SENT_DIR)]
    folders += [f"{INBOX_DIR}/{agent}/cur" for agent in _subdirs(mesh, INBOX_DIR)]
    expired = []
    for folder in folders:
        for file_name in mesh.store.names(folder):
            created = clock.id_time(_id_of(file_name))
            if created is not None and created < cutoff:
                expired.append(f"{folder}/{file_name}")
    return expired


def expire_history(mesh: Mesh, cutoff: float) -> list[str]:
    """Delete the history copies older than `cutoff`; returns those this call removed.

    A consumed copy takes its message's attachment files with it: the reader has had them.
    Concurrent calls are safe: each copy is removed (and its attachments dropped) by one.
    """
    removed = []
    for rel in expired_history(mesh, cutoff):
        if mesh.store.remove(rel):
            removed.append(rel)
            if rel.startswith(f"{INBOX_DIR}/"):
                remove_attachment_folder(mesh, _id_of(rel.rpartition("/")[2]))
    return removed


def orphan_attachments(mesh: Mesh, older_than: float) -> list[str]:
    """Ids under `attachments/` whose message exists nowhere, last changed before `older_than`.

    A sender killed after storing its attachments but before delivering leaves such a folder.
    """
    orphans = []
    folders = _mail_folders(mesh)
    for msg_id in _subdirs(mesh, ATTACHMENTS_DIR):
        if not _ID_RE.fullmatch(msg_id):
            continue
        changed = mesh.store.mtime(f"{ATTACHMENTS_DIR}/{msg_id}")
        if changed is not None and changed < older_than and _find_in(mesh, msg_id, folders) is None:
            orphans.append(msg_id)
    return orphans


def remove_attachment_folder(mesh: Mesh, msg_id: str) -> bool:
    """Delete `attachments/<id>/` and what it holds; False if it was gone or not emptied.

    The folder belongs to that one message (broadcast copies are links in their own folders).
    """
    if not _ID_RE.fullmatch(msg_id):
        return False
    folder = f"{ATTACHMENTS_DIR}/{msg_id}"
    for file_name in mesh.store.names(folder, suffix=""):
        with contextlib.suppress(OSError):  # not a file: the folder stays, and says so below
            mesh.store.remove(f"{folder}/{file_name}")
    return mesh.store.remove_dir(folder)
