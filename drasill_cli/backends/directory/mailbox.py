"""`Mailbox` for the directory mesh: a maildir per recipient, the senders' history, the archive.

Each inbox is a maildir (`inbox/NAME/{new,cur}`), so senders never take a lock:
- a sender publishes the message (`FileStore.publish`): written into the store's staging folder
  and flushed, hard-linked into `new/`, whose folder is flushed, and the temp name renamed into
  `sent/FROM/ID.json` (its history entry). A killed sender leaves at most a whole temp file in
  the staging folder (never read; prune clears it). `sent/` is not flushed: it is history,
  not delivery; after a power loss the entry may be missing or still under its temp name, but
  the delivered copy in `new/` is there;
- a reader takes a message by moving its file from `new/` into `cur/` (`FileStore.move`):
  rename(2) succeeds for exactly one of any number of racing readers, the others try the next.

File names carry the order: `<rank>-<id>.json`, rank 0 for urgent and 1 for normal, and ids sort
in creation order, so a sorted listing is urgent first, then oldest first, without parsing.
`new/` is sharded by rank and by the id's time characters into three folder levels (about 18
minutes, 1 second, 33 ms wide), so finding the next message lists a few small folders instead of
every unread name: taking with 10,000 unread costs about what it costs with 10. Takers remove
the empty shards they pass; a sender whose shard vanished under it simply recreates it.

Removed agents' unread mail moves to `archive/NAME/` under the same file name; a send that lands
after its recipient was removed moves its own copy there (the removal archives once more after
dropping the agent, so a send that found it still registered is archived by one of the two).
Attachment paths are never stored: each read asks `Attachments.local_path` (the file's own path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from drasill_cli import clock
from drasill_cli.backends.directory.layout import (
    ARCHIVE_DIR,
    INBOX_DIR,
    SENT_DIR,
    archive_folder,
    inbox_cur,
    inbox_new,
    sent_folder,
)
from drasill_cli.backends.directory.store import FileStore, encode_record
from drasill_cli.storage.mailbox import ExpiredCopy, check_message, stored_form

_RANK = {"urgent": "0", "normal": "1"}
# Slices of the id's 13 time characters (5 bits each) that name the shard folders of `new/`.
_SHARDS = ((0, 5), (5, 7), (7, 8))


def _file_name(msg_id: str, rank: str) -> str:
    """`<rank>-<id>.json`: a sorted listing is urgent first, then oldest first."""
    return f"{rank}-{msg_id}.json"


def _shard(msg_id: str, rank: str) -> str:
    """The shard folders under `new/` for a message: `<rank>-<t0..t4>/<t5t6>/<t7>`."""
    stamp = msg_id.split("-")[1]
    first, *rest = (stamp[a:b] for a, b in _SHARDS)
    return "/".join([f"{rank}-{first}", *rest])


def copy_files(message: dict[str, Any]) -> dict[str, str]:
    """Where each copy of `message` is kept: its recipient's copy while `unread`, once `read`
    and when `archived`, and its sender's history entry (`sent`)."""
    msg_id, rank, to = message["id"], _RANK[message["priority"]], message["to"]
    name = _file_name(msg_id, rank)
    return {
        "unread": f"{inbox_new(to)}/{_shard(msg_id, rank)}/{name}",
        "read": f"{inbox_cur(to)}/{name}",
        "archived": f"{archive_folder(to)}/{name}",
        "sent": f"{sent_folder(message['from'])}/{msg_id}.json",
    }


def _id_of(file_name: str) -> str:
    """`1-m-....json` (inbox, archive) or `m-....json` (sent) to the message id."""
    stem = file_name.rpartition("/")[2].removesuffix(".json")
    return stem.split("-", 1)[1] if stem[:1] in ("0", "1") and stem[1:2] == "-" else stem


class _Box:
    """Store names of one agent's maildir."""

    def __init__(self, store: FileStore, name: str) -> None:
        self.store = store
        self.new = inbox_new(name)
        self.cur = inbox_cur(name)

    def exists(self) -> bool:
        return self.store.mtime(self.new) is not None

    def unread(self, *, tidy: bool = False) -> Iterator[str]:
        """Store names of the unread messages in take order, listed lazily.

        With `tidy`, empty shard folders met on the way are removed (takers do this).
        """
        return self.store.scan(self.new, depth=len(_SHARDS), remove_empty=tidy)


class DirectoryMailbox:
    def __init__(
        self,
        store: FileStore,
        local_path: Callable[[str, str], str],
        record: Callable[[dict[str, Any]], None],
        registered: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.local_path = local_path  # `Attachments.local_path`: where a reader finds a file
        self.record = record  # appends an audit event, a failure being a warning
        self.registered = registered  # `Presence.is_registered`

    # ---- reading one message ----------------------------------------------------------------

    def _check(self, raw: dict[str, Any]) -> dict[str, Any]:
        return check_message(raw, self.local_path)

    def _load(self, rel: str) -> dict[str, Any] | None:
        """The message in file `rel`, or None when it vanished or is damaged (quarantined)."""
        return self.store.read_checked(rel, self._check)

    # ---- the Mailbox interface --------------------------------------------------------------

    def deliver(self, message: dict[str, Any], event: dict[str, Any]) -> bool:
        """Staged, linked into new/<shard>/ (flushed), kept in sent/FROM/; then `event`
        appended to the audit log."""
        if not self.registered(message["to"]):
            return False
        files = copy_files(message)
        self.store.publish(
            encode_record(stored_form(message)), links=[files["unread"]], keep_as=files["sent"]
        )
        self.record(event)
        if not self.registered(message["to"]):
            # Removed while this was under way, after its removal archived the inbox: the
            # message goes where the rest of its mail went (kept, never deleted).
            self.store.move(files["unread"], files["archived"])
        return True

    def has_mailbox(self, agent: str) -> bool:
        return _Box(self.store, agent).exists()

    def owners(self) -> list[str]:
        return sorted(self.store.subdirs(INBOX_DIR))

    def take_next(self, agent: str) -> dict[str, Any] | None:
        box = _Box(self.store, agent)
        for rel in box.unread(tidy=True):
            message = self._load(rel)  # checked before it is taken: only a usable one is
            if message is not None and self.store.move(rel, f"{box.cur}/{rel.rpartition('/')[2]}"):
                return message
            # gone: another reader took it first
        return None

    def last_taken(self, agent: str) -> dict[str, Any] | None:
        """The newest rename into `cur/`: taking is that rename, and rename(2) sets the file's
        change time (ctime) on Linux file systems; nothing is written at take time."""
        cur = inbox_cur(agent)
        taken: list[tuple[int, str]] = []
        for name in self.store.names(cur):
            changed = self.store.changed_ns(f"{cur}/{name}")
            if changed is not None:
                taken.append((changed, name))
        for _, name in sorted(taken, reverse=True):
            message = self._load(f"{cur}/{name}")  # a damaged one is quarantined: the one before
            if message is not None:
                return message
        return None

    def unread(self, agent: str) -> Iterator[dict[str, Any]]:
        for rel in _Box(self.store, agent).unread():
            message = self._load(rel)
            if message is not None:
                yield message

    def has_unread(self, agent: str) -> bool:
        return next(_Box(self.store, agent).unread(), None) is not None

    def unread_count(self, agent: str) -> int:
        return sum(1 for _ in _Box(self.store, agent).unread())

    def history(self, agent: str, limit: int) -> list[dict[str, Any]]:
        sent, cur = sent_folder(agent), inbox_cur(agent)
        rels = {_id_of(n): f"{sent}/{n}" for n in self.store.names(sent)}
        rels.update({_id_of(n): f"{cur}/{n}" for n in self.store.names(cur)})
        return self._newest(rels, limit)

    def receipts(self, agent: str, limit: int) -> list[dict[str, Any]]:
        """Where the recipient's copy of each sent message is tells its state: `new/` unread,
        `cur/` read (taken at its rename, the file's ctime), the archive archived."""
        folder = sent_folder(agent)
        sent = self._newest({_id_of(n): f"{folder}/{n}" for n in self.store.names(folder)}, limit)
        return [self._receipt(message) for message in sent]

    def _receipt(self, message: dict[str, Any]) -> dict[str, Any]:
        files = copy_files(message)
        # A copy only moves out of `new/` (taken or archived): looked at in that order, a
        # move between two looks is still seen.
        if self.store.mtime(files["unread"]) is not None:
            return {**message, "state": "unread", "read_at": None}
        taken = self.store.changed_ns(files["read"])
        if taken is None and self.store.mtime(files["archived"]) is not None:
            return {**message, "state": "archived", "read_at": None}
        read_at = None if taken is None else clock.iso(taken / 1e9)
        return {**message, "state": "read", "read_at": read_at}

    def archived(self, agent: str, limit: int) -> list[dict[str, Any]]:
        folder = archive_folder(agent)
        return self._newest({_id_of(n): f"{folder}/{n}" for n in self.store.names(folder)}, limit)

    def _newest(self, rels: dict[str, str], limit: int) -> list[dict[str, Any]]:
        """The usable messages of `rels` (id to file), newest id first, at most `limit`."""
        found: list[dict[str, Any]] = []
        for msg_id in sorted(rels, reverse=True):
            message = self._load(rels[msg_id])
            if message is not None:
                found.append(message)
                if len(found) == limit:
                    break
        return found

    def stored_copies(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every usable stored copy as (`unread`, `read`, `archived` or `sent`, the message in
        its stored form), for an export."""
        for agent in self.owners():
            for rel in _Box(self.store, agent).unread():
                yield from self._copy("unread", rel)
            for name in self.store.names(inbox_cur(agent)):
                yield from self._copy("read", f"{inbox_cur(agent)}/{name}")
        for agent in self.store.subdirs(ARCHIVE_DIR):
            for name in self.store.names(archive_folder(agent)):
                yield from self._copy("archived", f"{archive_folder(agent)}/{name}")
        for agent in self.store.subdirs(SENT_DIR):
            for name in self.store.names(sent_folder(agent)):
                yield from self._copy("sent", f"{sent_folder(agent)}/{name}")

    def _copy(self, where: str, rel: str) -> Iterator[tuple[str, dict[str, Any]]]:
        message = self._load(rel)
        if message is not None:
            yield where, stored_form(message)

    def find(self, msg_id: str) -> dict[str, Any] | None:
        return self.locator()(msg_id)

    def locator(self) -> Callable[[str], dict[str, Any] | None]:
        """`find` for many ids: the folders of every agent are listed once, up front.

        Every location is derived from the id, so each look-up is a few stats per agent.
        """
        senders = self.store.subdirs(SENT_DIR)
        inboxes = self.store.subdirs(INBOX_DIR)
        archives = self.store.subdirs(ARCHIVE_DIR)

        def locate(msg_id: str) -> dict[str, Any] | None:
            candidates = [f"{sent_folder(s)}/{msg_id}.json" for s in senders]
            for agent in inboxes:
                for rank in _RANK.values():
                    name = _file_name(msg_id, rank)
                    candidates += [
                        f"{inbox_cur(agent)}/{name}",
                        f"{inbox_new(agent)}/{_shard(msg_id, rank)}/{name}",
                    ]
            for agent in archives:
                candidates += [
                    f"{archive_folder(agent)}/{_file_name(msg_id, r)}" for r in _RANK.values()
                ]
            for rel in candidates:
                if self.store.mtime(rel) is not None:
                    message = self._load(rel)
                    if message is not None:
                        return message
            return None

        return locate

    def archive(self, agent: str) -> list[str]:
        moved = []
        for rel in _Box(self.store, agent).unread(tidy=True):
            file_name = rel.rpartition("/")[2]
            if self._load(rel) is not None and self.store.move(
                rel, f"{archive_folder(agent)}/{file_name}"
            ):
                moved.append(_id_of(file_name))
        return moved

    def expire_history(self, cutoff: float, *, apply: bool = True) -> list[ExpiredCopy]:
        """The time comes from the id in the file name, so nothing is opened."""
        folders = [(sent_folder(s), False) for s in self.store.subdirs(SENT_DIR)]
        folders += [(inbox_cur(a), True) for a in self.store.subdirs(INBOX_DIR)]
        expired = []
        for folder, read in folders:
            for file_name in self.store.names(folder):
                msg_id = _id_of(file_name)
                created = clock.id_time(msg_id)
                if created is None or created >= cutoff:
                    continue
                rel = f"{folder}/{file_name}"
                if not apply or self.store.remove(rel):
                    expired.append(ExpiredCopy(rel, msg_id, read))
        return expired
