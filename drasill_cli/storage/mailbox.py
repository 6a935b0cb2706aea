"""`Mailbox`: every agent's mail, in the words of mail.

A message is a dict that passed `check_message` (the keys of the contract's message object).
The backend owns where and how mail is kept (maildir shards, rows); the feature module
`messages.py` owns the rules (who may send, bodies, replies, broadcast, which attachments go
when a message is archived or expires).

Attachments: a stored message names its attachments (`name`, `size`, `sha256`) and never where
they are, so the record does not depend on where the mesh lives. Every message a `Mailbox`
returns carries a `path` for each attachment: the backend's `Attachments.local_path` at read
time. A record written by an older version still holds a `path`; it is replaced the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

from drasill_cli.models import MessageRecord, RecordError

MESSAGE_ID_RE = re.compile(r"m-[0-9a-z]{13}-[0-9a-z]{4}")


def is_message_id(text: str) -> bool:
    return MESSAGE_ID_RE.fullmatch(text) is not None


def check_message(raw: Any, local_path: Callable[[str, str], str]) -> dict[str, Any]:
    """`raw` as a message a reader can use, each attachment's `path` from `local_path(msg_id,
    name)`; RecordError (its reason fit for the quarantine report) when it is not one.

    Every backend reads each stored message through this, so all apply the same rules.
    """
    try:
        return _checked(raw, local_path)
    except RecordError as exc:
        raise RecordError(f"is not a message: it {exc.reason}") from None


def _checked(raw: Any, local_path: Callable[[str, str], str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecordError("is not an object")
    msg_id = raw.get("id")
    if not isinstance(msg_id, str) or not is_message_id(msg_id):
        raise RecordError("has a bad id")  # checked first: the id names the attachments
    items = raw.get("attachments")
    if isinstance(items, list):
        raw = {**raw, "attachments": [_localized(msg_id, i, local_path) for i in items]}
    message = MessageRecord.check(raw)
    # The contract's keys are always there: an older or hand-made record may lack the optional
    # ones (a message that is no reply starts its own thread, as `send` writes it).
    for key, default in (("reply_to", None), ("thread", msg_id), ("attachments", [])):
        message.setdefault(key, default)
    return message


def _localized(msg_id: str, item: Any, local_path: Callable[[str, str], str]) -> Any:
    """One attachment with the reader's `path` (keys in the contract's order)."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return item  # MessageRecord.check says what is wrong with it
    from drasill_cli.storage.attachments import is_attachment_name  # only mail with files

    name = item["name"]
    if not is_attachment_name(name):
        raise RecordError(f"has an attachment with an unusable name {name[:40]!r}")
    rest = {key: value for key, value in item.items() if key not in ("name", "path")}
    return {"name": name, "path": local_path(msg_id, name), **rest}


def stored_form(message: dict[str, Any]) -> dict[str, Any]:
    """`message` as a backend keeps it: attachments without the sender's local `path`."""
    items = message["attachments"]
    if not items:
        return message
    return {**message, "attachments": [{k: v for k, v in i.items() if k != "path"} for i in items]}


class ExpiredCopy(NamedTuple):
    """One history copy that expired."""

    entry: str  # what it was, fit to print (the directory mesh: its file in the mesh)
    msg_id: str
    read: bool  # a recipient's read copy (True) or the sender's sent copy (False)


class Mailbox(Protocol):
    def deliver(self, message: dict[str, Any], event: dict[str, Any]) -> bool:
        """Make `message` unread for `message["to"]` and keep it in its sender's history;
        durable when this returns. Whole or not at all: a killed sender delivers a message
        completely or leaves no trace a reader can see. Attachments are stored without `path`
        (`stored_form`). False, with nothing written, when `message["to"]` is not a registered
        agent (looked up in the same step: a database in the same statement).

        `event` (`auditlog.event`) is the delivery's audit event, appended with it: a backend
        with transactions writes both in one; one without appends it once the message is
        delivered, a failure to append being a warning (`auditlog.append_or_warn`)."""
        ...

    def has_mailbox(self, agent: str) -> bool:
        """Whether `agent` ever had a mailbox (mail to an unregistered name is still readable)."""
        ...

    def owners(self) -> list[str]:
        """Every agent that has a mailbox (mail was delivered to it), sorted; `mesh watch`
        looks at each, registered or not."""
        ...

    def take_next(self, agent: str) -> dict[str, Any] | None:
        """Mark the next unread message (urgent first, then oldest) read and return it; of any
        number of concurrent takers exactly one gets each message. None when none is unread."""
        ...

    def last_taken(self, agent: str) -> dict[str, Any] | None:
        """The message `take_next` gave last (the most recently consumed one still kept), left
        as it is: a reader killed between taking a message and showing it loses nothing. None
        when the agent has consumed nothing (or its history has expired)."""
        ...

    def unread(self, agent: str) -> Iterator[dict[str, Any]]:
        """Unread messages in take order, left unread; lazily, so the first one (a peek) costs
        about what one message costs however many are waiting."""
        ...

    def has_unread(self, agent: str) -> bool:
        """Whether anything is unread (cheap: nothing is parsed)."""
        ...

    def unread_count(self, agent: str) -> int:
        """How many messages are unread (cheap: nothing is parsed)."""
        ...

    def history(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Messages `agent` sent or took, newest first, at most `limit`."""
        ...

    def receipts(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Messages `agent` sent, newest first, at most `limit`, each with the `state` of its
        recipient's copy (`unread`, `read`, `archived`) and `read_at` (when it was taken, an
        ISO time; None unless read, or when the read copy has expired: a copy that left the
        unread mail and is not archived was read)."""
        ...

    def archived(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Unread mail archived when `agent` was removed, newest first, at most `limit`."""
        ...

    def find(self, msg_id: str) -> dict[str, Any] | None:
        """The message with this id wherever it is (sent, unread, read, archived)."""
        ...

    def archive(self, agent: str) -> list[str]:
        """Move `agent`'s unread mail to its archive (never deleted); the ids this call moved
        (concurrent takers and archivers each get a message at most once)."""
        ...

    def expire_history(self, cutoff: float, *, apply: bool = True) -> list[ExpiredCopy]:
        """Sent and read copies of messages created before `cutoff` (epoch seconds), by the
        time in the id: removed with `apply` (those this call removed), only listed without.
        Unread and archived mail never expires."""
        ...
