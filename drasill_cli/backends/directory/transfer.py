"""`Transfer` for the directory mesh: every record file as an item, and back.

Items are written with the same primitives the interfaces use (atomic record writes, the
sidecar flocks of agents, tasks and task numbers), each skipped when its file is there: a
message copy is found by its file name in every folder that may hold it (unread, read,
archived), so a second import never delivers it again. A heartbeat is restored as the mtime
of its file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO

from drasill_cli.backends.directory.layout import (
    ATTACHMENTS_DIR,
    PAUSED_DIR,
    WARNED_DIR,
    agent_lock,
    agent_record,
    attachment_folder,
    heartbeat,
)
from drasill_cli.backends.directory.mailbox import copy_files
from drasill_cli.backends.directory.store import UnusableRecord
from drasill_cli.models import RecordError, Task
from drasill_cli.storage.attachments import is_attachment_name
from drasill_cli.storage.budgets import check_pause, check_warning
from drasill_cli.storage.mailbox import is_message_id
from drasill_cli.storage.transfer import (
    ATTACHMENT_CHUNK,
    MESSAGE_STATES,
    AuditRestorer,
    attachment_bytes,
    audit_items,
    lock_items,
    message_items,
    meta_item,
    restore_lock,
    restore_wake,
    streamed_attachment_item,
    wake_items,
)

if TYPE_CHECKING:
    from drasill_cli.backends.directory import DirectoryBackend

_BUDGET_FOLDERS = {"budget-warning": WARNED_DIR, "budget-pause": PAUSED_DIR}
_BUDGET_CHECKS: dict[str, Callable[[Any], Any]] = {
    "budget-warning": check_warning,
    "budget-pause": check_pause,
}


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(ATTACHMENT_CHUNK):
        yield chunk


class DirectoryTransfer:
    def __init__(self, backend: DirectoryBackend) -> None:
        self.backend = backend
        self.store = backend.store

    @cached_property
    def _audit(self) -> AuditRestorer:
        return AuditRestorer(self.backend.audit_log)

    # ---- dump ------------------------------------------------------------------------------

    def dump(self) -> Iterator[dict[str, Any]]:
        backend = self.backend
        yield meta_item(backend.kind)
        yield from self._agents()
        yield from self._attachments()
        yield from self._messages()
        for task in sorted(backend.board.all(), key=lambda task: task.id):
            yield {"kind": "task", "record": task.to_record()}
        yield {"kind": "task-sequence", "last": backend.board.sequence()}
        yield from lock_items(backend.locks)
        for kind in _BUDGET_FOLDERS:
            yield from self._budgets(kind)
        yield from wake_items(backend.wake_book)
        yield from audit_items(backend.audit_log.read())

    def _agents(self) -> Iterator[dict[str, Any]]:
        presence = self.backend.presence
        for name in sorted(presence.names()):
            agent = presence.get(name)
            if agent is not None:
                last_seen = presence.last_seen(name)
                if last_seen is not None:  # microseconds, as every backend keeps them
                    last_seen = round(last_seen, 6)
                yield {"kind": "agent", "record": agent.to_record(), "last_seen": last_seen}

    def _attachments(self) -> Iterator[dict[str, Any]]:
        """Every attachment file, read in chunks (any size up to the attachment limit); an
        entry that is not a readable regular file is skipped and said so, never fatal."""
        limit = self.backend.config.messages.max_attachment_bytes
        for msg_id in self.store.subdirs(ATTACHMENTS_DIR):
            if not is_message_id(msg_id):
                continue
            folder = attachment_folder(msg_id)
            for name in self.store.names(folder, suffix="", temps=True):
                rel = f"{folder}/{name}"
                if not is_attachment_name(name):
                    self._skipped(rel, "has a name no attachment may have")
                    continue
                try:
                    with self.store.open_file(rel) as source:
                        item = streamed_attachment_item(msg_id, name, _chunks(source), limit)
                except FileNotFoundError:
                    continue  # dropped meanwhile (prune)
                except UnusableRecord as exc:
                    self._skipped(rel, exc.reason)
                    continue
                except RecordError as exc:
                    self._skipped(rel, f"{exc.reason} (messages.max_attachment_bytes)")
                    continue
                except OSError as exc:
                    self._skipped(rel, f"cannot be read ({exc.strerror or exc})")
                    continue
                yield item

    def _skipped(self, rel: str, reason: str) -> None:
        self.backend.warnings.append(
            f"export skipped {self.store.path(rel)}: it {reason}; it is not in the export"
        )

    def _messages(self) -> Iterator[dict[str, Any]]:
        return message_items(self.backend.mailbox.stored_copies())

    def _budgets(self, kind: str) -> Iterator[dict[str, Any]]:
        folder, check = _BUDGET_FOLDERS[kind], _BUDGET_CHECKS[kind]
        for name in self.store.names(folder):
            record = self.store.read_checked(f"{folder}/{name}", lambda raw: (check(raw), raw)[1])
            if record is not None:
                yield {"kind": kind, "agent": name.removesuffix(".json"), "record": record}

    # ---- restore ---------------------------------------------------------------------------

    def restore(self, item: dict[str, Any]) -> bool:
        return self._restorers[item["kind"]](item)

    @cached_property
    def _restorers(self) -> dict[str, Callable[[dict[str, Any]], bool]]:
        backend = self.backend
        return {
            "meta": lambda _item: False,
            "agent": lambda item: self._restore_agent(item["record"], item["last_seen"]),
            "attachment": self._restore_attachment,
            "message": lambda item: self._restore_message(
                item["message"], item["state"], sent=item["sent"]
            ),
            "task": lambda item: backend.board.restore(Task.from_record(item["record"])),
            "task-sequence": lambda item: backend.board.raise_sequence(item["last"]),
            "lock": lambda item: restore_lock(backend.locks, item["record"]),
            "budget-warning": self._restore_budget,
            "budget-pause": self._restore_budget,
            "wake": lambda item: restore_wake(backend.wake_book, item["agent"], item["record"]),
            "audit": self._audit.restore,
        }

    def _restore_budget(self, item: dict[str, Any]) -> bool:
        return self.store.create(
            f"{_BUDGET_FOLDERS[item['kind']]}/{item['agent']}.json", item["record"]
        )

    def _restore_agent(self, record: dict[str, Any], last_seen: float | None) -> bool:
        name = record["name"]
        with self.store.lock(agent_lock(name)):
            if not self.store.create(agent_record(name), record):
                return False
            if last_seen is not None:
                self.store.touch(heartbeat(name), when=last_seen)
        return True

    def _restore_message(self, message: dict[str, Any], state: str | None, *, sent: bool) -> bool:
        files = copy_files(message)
        wrote = False
        if state is not None and all(self.store.mtime(files[s]) is None for s in MESSAGE_STATES):
            self.store.write(files[state], message)
            wrote = True
        if sent:
            wrote = self.store.create(files["sent"], message) or wrote
        return wrote

    def _restore_attachment(self, item: dict[str, Any]) -> bool:
        rel = f"{attachment_folder(item['message_id'])}/{item['name']}"
        if self.store.mtime(rel) is not None:
            return False
        self.store.write_bytes(rel, attachment_bytes(item))
        return True
