"""`Presence` for the directory mesh: `agents/NAME.json` records, `heartbeats/NAME` mtimes.

The record's writer is proven by its file (`Writer.uid`): records are written sealed (no group
write bit), so the owner of the file read is the user who wrote it, whatever uid it names.

A heartbeat is an empty file whose modification time is the agent's last sign of life, so a beat
is one utime(2) and never rewrites the record. A decision about an agent runs under the sidecar
flock `agent-NAME`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drasill_cli import clock
from drasill_cli.backends.directory.layout import AGENTS_DIR, agent_lock, agent_record, heartbeat
from drasill_cli.backends.directory.store import FileStore
from drasill_cli.models import FUTURE_SLACK_S, AgentRecord, Writer, stored_agent
from drasill_cli.names import AGENT_NAME_RE, RESERVED_NAMES
from drasill_cli.storage.exclusion import deciding
from drasill_cli.storage.presence import REMOVE, Decision

RECORD_SUFFIX = ".json"


def _checker(name: str) -> Callable[[dict[str, Any]], AgentRecord]:
    """The check a stored record of `name` passes (`models.stored_agent`)."""
    return lambda raw: stored_agent(name, raw)


class DirectoryPresence:
    def __init__(self, store: FileStore) -> None:
        self.store = store

    def get(self, name: str) -> AgentRecord | None:
        found = self.store.read_checked_writer(agent_record(name), _checker(name))
        if found is None:
            return None
        agent, uid = found
        return agent.replace(writer=Writer(uid=uid))

    def names(self) -> list[str]:
        found = (n.removesuffix(RECORD_SUFFIX) for n in self.store.names(AGENTS_DIR))
        return [n for n in found if AGENT_NAME_RE.fullmatch(n) and n not in RESERVED_NAMES]

    def is_registered(self, name: str) -> bool:
        return self.store.mtime(agent_record(name)) is not None

    def change(
        self, name: str, decide: Callable[[AgentRecord | None], Decision], *, beat: bool = False
    ) -> AgentRecord | None:
        with self.store.lock(agent_lock(name)):
            current = self.get(name)
            decision = deciding("Presence.change", decide, current)
            if decision is None:
                return current
            if decision is REMOVE:
                self._drop(name)
                return None
            # Sealed: the file's owner is then the proof of who wrote the record (`get`); one
            # who rewrites it makes a file of their own, so the proof follows the new writer.
            self.store.write(agent_record(name), decision.to_record(), sealed=True)
            if beat:
                self.store.touch(heartbeat(name))
            return decision

    def remove(self, name: str) -> bool:
        with self.store.lock(agent_lock(name)):
            return self._drop(name)

    def _drop(self, name: str) -> bool:
        had = self.store.remove(agent_record(name))
        self.store.remove(heartbeat(name))
        return had

    def beat(self, name: str) -> bool:
        if not self.is_registered(name):
            return False
        self.store.touch(heartbeat(name))
        return True

    def last_seen(self, name: str) -> float | None:
        beat = self.store.mtime(heartbeat(name))
        if beat is None:
            return None
        now = clock.now()
        if beat > now + FUTURE_SLACK_S:
            if not self.store.read_only:
                self.store.touch(heartbeat(name))
            return now
        return beat
