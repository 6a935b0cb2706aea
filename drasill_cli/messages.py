"""Messages: send, consume exactly once, peek, list, wait, history, archive.

This module holds the rules of mail: who may send to whom, what a body and an attachment may
be, reply threads, what a broadcast that fails partway reports, which attachments go when a
message is archived or expires, and the audit record of each step. Where mail is kept is the
backend's (`mesh.backend.mailbox`, `mesh.backend.attachments`: see `drasill_cli.storage`).

This module is on the hot path of `mesh send` and `mesh inbox`: it imports nothing heavy, and
the backend's pieces only when a function first uses them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.errors import InvalidInput, MeshError, NotFound
from drasill_cli.names import check_agent_name, has_control_chars
from drasill_cli.storage import auditlog
from drasill_cli.storage.mailbox import is_message_id

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh
    from drasill_cli.storage.mailbox import Mailbox

PRIORITIES = ("normal", "urgent")
# Events wake `wait_for`; this re-check only guards against an event the kernel dropped.
_WAIT_RECHECK_S = 5.0


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


def _recipients(mesh: Mesh, to: str, sender: str, *, look: bool) -> list[str]:
    """Who gets the message. A name is looked up here only with `look` (a send that stores
    files first); otherwise the delivery itself refuses an unregistered name."""
    check_agent_name(to, allow_all=True)
    if to == "all":
        return [name for name in mesh.agent_names() if name != sender]
    if look and not mesh.is_registered(to):
        raise _unknown_agent(to)
    return [to]


def _unknown_agent(name: str) -> NotFound:
    return NotFound(
        f"no agent named {name!r} is registered; see `mesh agents --all` for who can receive mail",
        code="unknown-agent",
    )


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
        from drasill_cli.storage.attachments import MAX_ATTACHMENT_NAME_BYTES  # only with files

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
        import hashlib  # only with files: loading OpenSSL costs a few ms of start-up

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
    if not is_message_id(msg_id):
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
    attachments = list(attachments)
    recipients = _recipients(mesh, to, sender, look=bool(attachments))
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
    backend = mesh.backend
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
        event = auditlog.event(
            "send",
            sender,
            id=msg_id,
            to=recipient,
            priority=priority,
            thread=message["thread"],
            attachments=len(files),
            wake=wake,
        )
        try:
            if files:  # a broadcast stores the files once: later copies share the first
                same_as = sent[0]["id"] if sent else None
                message["attachments"] = backend.attachments.put(msg_id, files, same_as=same_as)
            delivered = backend.mailbox.deliver(message, event)
            if not delivered and files:
                backend.attachments.drop(msg_id)
        except (MeshError, OSError) as exc:
            if files:
                with contextlib.suppress(MeshError, OSError):
                    backend.attachments.drop(msg_id)
            if sent and isinstance(exc, MeshError):
                raise _broadcast_cut_short(exc, sent, recipients[len(sent) :]) from exc
            raise
        if not delivered:
            if to != "all":
                raise _unknown_agent(to)
            continue  # it left the mesh while the broadcast was going out
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


# ---- reading -------------------------------------------------------------------------------


def _mailbox(mesh: Mesh, name: str) -> Mailbox:
    """The mailbox, once `name` is known to have one: NotFound for a name that is neither
    registered nor has mail."""
    check_agent_name(name)
    mailbox = mesh.backend.mailbox
    if not mesh.is_registered(name) and not mailbox.has_mailbox(name):
        raise NotFound(
            f"no agent named {name!r} is registered and it has no mail; see `mesh agents --all`",
            code="unknown-agent",
        )
    return mailbox


def consume(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """Take the next message (urgent first, then oldest): exactly one reader gets each one."""
    message = _mailbox(mesh, name).take_next(name)
    if message is not None:
        mesh.append_audit_event("consume", name, id=message["id"], sender=message.get("from"))
    return message


def last_consumed(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """The message `consume` took last for `name`, shown again and left as it is: a reader
    killed between taking a message and printing it (`mesh inbox --last`) loses nothing."""
    return _mailbox(mesh, name).last_taken(name)


def peek(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """The message `consume` would take next, left unread."""
    return next(_mailbox(mesh, name).unread(name), None)


def list_unread(mesh: Mesh, name: str) -> list[dict[str, Any]]:
    """Every unread message in consume order, left unread."""
    return list(_mailbox(mesh, name).unread(name))


def unread_count(mesh: Mesh, name: str) -> int:
    """Unread messages in the agent's inbox (nothing parsed)."""
    return mesh.backend.mailbox.unread_count(name)


def wait_for(mesh: Mesh, name: str, timeout: float) -> bool:
    """Block until the inbox has unread mail (True) or `timeout` seconds pass (False).

    Woken by the backend's change notices (`mesh.backend.changes`), not a sleep loop. The watch
    starts before the first look, so a message arriving in between is never missed. A store
    lost meanwhile (a database restarting) is waited for (`[store] reconnect_timeout`).
    """
    from drasill_cli.waiting import check_wait, enduring

    check_wait(timeout)
    mailbox = _mailbox(mesh, name)
    if timeout == 0:
        return mailbox.has_unread(name)
    from drasill_cli.storage.changes import inbox

    deadline = time.monotonic() + timeout
    patience = mesh.config.store.reconnect_timeout
    with mesh.backend.changes.watch(inbox(name)) as new_mail:
        while True:
            if enduring(lambda: mailbox.has_unread(name), patience):  # across a restart
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            new_mail.wait(min(remaining, _WAIT_RECHECK_S))


# ---- history, lookup, archive --------------------------------------------------------------


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise InvalidInput(f"--limit must be 1 or more, got {limit}", code="invalid-limit")
    return limit


def history(mesh: Mesh, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Messages `name` sent or consumed, newest first, at most `limit`."""
    check_agent_name(name)
    return mesh.backend.mailbox.history(name, _check_limit(limit))


def receipts(mesh: Mesh, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Messages `name` sent, newest first, each with `state` (`unread`, `read`, `archived`)
    and `read_at` (when read; None otherwise or when no longer known)."""
    check_agent_name(name)
    return mesh.backend.mailbox.receipts(name, _check_limit(limit))


# The sender of a bounce (not an agent: a reply to it is refused as to an unknown agent).
BOUNCER = "mesh"
# A bounce names at most this many messages, then how many more.
BOUNCE_LISTED = 10


def bounce_unread(mesh: Mesh, name: str) -> list[str]:
    """Tell each registered sender of `name`'s unread mail, once, what it sent that was not
    read: for an agent just marked dead (`lifecycle`, after that commit, by the one pass that
    marked it, so concurrent prunes bounce once). The mail stays where it is. Returns who was
    told; a failed notice is a warning."""
    by_sender: dict[str, list[dict[str, Any]]] = {}
    for message in mesh.backend.mailbox.unread(name):
        by_sender.setdefault(message["from"], []).append(message)
    told = []
    for sender, unread in sorted(by_sender.items()):
        if sender == name or not mesh.is_registered(sender):
            continue
        lines = [f"- {m['id']} ({m['created_at']}): {_first_line(m['body'])}" for m in unread]
        more = len(lines) - BOUNCE_LISTED
        body = (
            f"bounce: {name} was marked dead with {len(unread)} message(s) from you unread:\n"
            + "\n".join(lines[:BOUNCE_LISTED])
            + (f"\n... and {more} more" if more > 0 else "")
            + "\nThey stay in its inbox (archived when it is removed); if they matter, send "
            "them to another agent (`mesh agents` lists who is alive)."
        )
        try:
            send(mesh, sender, body, sender=BOUNCER, priority="urgent")
        except MeshError as exc:
            mesh.warnings.append(f"could not bounce {name}'s unread mail to {sender}: {exc}")
            continue
        told.append(sender)
    return told


def _first_line(body: str, keep: int = 60) -> str:
    first = body.strip().splitlines()[0] if body.strip() else ""
    return first if len(first) <= keep else first[: keep - 3] + "..."


def archived(mesh: Mesh, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Unread mail archived when `name` was unregistered or removed, newest first."""
    check_agent_name(name)
    return mesh.backend.mailbox.archived(name, _check_limit(limit))


def find(mesh: Mesh, msg_id: str) -> dict[str, Any] | None:
    """The message with this id wherever it is (sent, unread, consumed, archived), or None."""
    return mesh.backend.mailbox.find(_check_id(msg_id))


def archive_inbox(mesh: Mesh, name: str) -> int:
    """Move a removed agent's unread mail to its archive (never deleted); returns how many.

    The attachment files of archived messages are removed: nobody is left to read them.
    """
    check_agent_name(name)
    moved = mesh.backend.mailbox.archive(name)
    for msg_id in moved:
        remove_attachment_folder(mesh, msg_id)
    if moved:
        mesh.append_audit_event("archive-inbox", None, agent=name, messages=len(moved))
    return len(moved)


def expired_history(mesh: Mesh, cutoff: float) -> list[str]:
    """Sent and consumed copies of messages created before `cutoff` (what `expire_history`
    would delete). Unread and archived mail is never included."""
    return [copy.entry for copy in mesh.backend.mailbox.expire_history(cutoff, apply=False)]


def expire_history(mesh: Mesh, cutoff: float) -> list[str]:
    """Delete the history copies older than `cutoff`; returns those this call removed.

    A consumed copy takes its message's attachment files with it: the reader has had them.
    Concurrent calls are safe: each copy is removed (and its attachments dropped) by one.
    """
    removed = mesh.backend.mailbox.expire_history(cutoff)
    for copy in removed:
        if copy.read:
            remove_attachment_folder(mesh, copy.msg_id)
    return [copy.entry for copy in removed]


def orphan_attachments(mesh: Mesh, older_than: float) -> list[str]:
    """Ids of stored attachments whose message exists nowhere, stored before `older_than`.

    A sender killed after storing its attachments but before delivering leaves such files.
    """
    return mesh.backend.attachments.orphans(older_than)


def remove_attachment_folder(mesh: Mesh, msg_id: str) -> bool:
    """Drop one message's attachments; False if they were gone or could not all be removed.

    They belong to that one message (broadcast copies own their own).
    """
    return mesh.backend.attachments.drop(msg_id)
